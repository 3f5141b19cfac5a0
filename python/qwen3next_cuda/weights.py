"""Checkpoint tensors -> the in-memory layout our ops use.

In-memory layout (the keys of the dict every model consumes): the transformers-5 state-dict names
with two changes made once at load time:
  * ``model.layers.{i}.linear_attn.in_proj_qkvz.weight`` rows reordered from the published per-key-head
    groups ``[q_g | k_g | v_2g v_2g+1 | z_2g z_2g+1]`` into contiguous ``[q | k | v | z]``;
    ``in_proj_ba.weight`` from groups ``[b_2g b_2g+1 | a_2g a_2g+1]`` into ``[b | a]``.
  * experts stacked: ``model.layers.{i}.mlp.experts.gate_up_proj`` [E, 2I, H], gate and up rows interleaved in
    blocks of 32 where I is a multiple of 32 (``reference.interleave_gate_up``; published stacks, and ours at other
    widths, have the gate rows first), and
    ``model.layers.{i}.mlp.experts.down_proj`` [E, H, I].
Everything else (``mtp.*`` included) keeps its published name and shape. ``A_log`` and ``dt_bias`` are fp32,
every other tensor has the requested dtype; with tied embeddings ``lm_head.weight`` is ``model.embed_tokens.weight``.

Loading (``load_weights``) reads ``model.safetensors`` or the shards named by ``model.safetensors.index.json``;
experts may come per expert (published: ``mlp.experts.{e}.{gate_proj,up_proj,down_proj}.weight``) or already
stacked (``mlp.experts.gate_up_proj`` / ``mlp.experts.down_proj``). Every header is validated against the config
before any data is read; then tensors go one at a time straight to the target device and dtype.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass

import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from .config import FULL_ATTENTION, Qwen3NextConfig
from .reference.moe import gate_up_halves, interleave_gate_up

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
FP32_TENSORS = ("A_log", "dt_bias")  # last name component of the tensors kept in fp32
EXPERT_PROJS = ("gate_proj", "up_proj", "down_proj")

Shape = tuple[int, ...]


def storage_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype the model keeps tensor ``name`` in when loaded in ``dtype``: fp32 for ``A_log``/``dt_bias``."""
    return torch.float32 if name.rsplit(".", 1)[-1] in FP32_TENSORS else dtype
_FLOAT_DTYPES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8}  # safetensors dtype -> bytes per element
_PER_EXPERT = re.compile(r"^(?P<experts>.+\.mlp\.experts)\.(?P<expert>\d+)\.(?P<proj>\w+)\.weight$")
_MTP_LAYER = re.compile(r"^mtp\.layers\.\d+\.")


def _split_grouped_rows(weight: torch.Tensor, groups: int, sizes: list[int]) -> list[torch.Tensor]:
    """View ``weight`` [groups * sum(sizes), ...] as per-group blocks and gather each block kind."""
    per_group = weight.reshape(groups, sum(sizes), *weight.shape[1:])
    parts = torch.split(per_group, sizes, dim=1)
    return [p.reshape(-1, *weight.shape[1:]) for p in parts]


def reorder_in_proj_qkvz(weight: torch.Tensor, config: Qwen3NextConfig) -> torch.Tensor:
    """Published grouped rows -> contiguous ``[q | k | v | z]`` rows."""
    hk, dk, dv = config.linear_num_key_heads, config.linear_key_head_dim, config.linear_value_head_dim
    ratio = config.linear_num_value_heads // hk
    expected = 2 * config.linear_key_dim + 2 * config.linear_value_dim
    if weight.shape[0] != expected:
        raise ValueError(f"in_proj_qkvz has {weight.shape[0]} rows, expected {expected}")
    return torch.cat(_split_grouped_rows(weight, hk, [dk, dk, ratio * dv, ratio * dv]), dim=0)


def reorder_in_proj_ba(weight: torch.Tensor, config: Qwen3NextConfig) -> torch.Tensor:
    """Published grouped rows -> contiguous ``[b | a]`` rows."""
    hk = config.linear_num_key_heads
    ratio = config.linear_num_value_heads // hk
    if weight.shape[0] != 2 * config.linear_num_value_heads:
        raise ValueError(f"in_proj_ba has {weight.shape[0]} rows, expected {2 * config.linear_num_value_heads}")
    return torch.cat(_split_grouped_rows(weight, hk, [ratio, ratio]), dim=0)


def from_transformers(state_dict: dict[str, torch.Tensor], config: Qwen3NextConfig) -> dict[str, torch.Tensor]:
    """transformers' in-memory ``Qwen3NextForCausalLM`` state dict (fused experts, as ours) -> the in-memory layout:
    the in_proj rows regrouped, the experts' gate and up rows interleaved, ``A_log``/``dt_bias`` in fp32,
    ``lm_head`` left out when tied. Other tensors are shared, not copied."""
    weights = {}
    for name, tensor in state_dict.items():
        weights[name] = _to_memory_layout(name, tensor, config).to(storage_dtype(name, tensor.dtype))
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    return weights


# ---- expected tensors ---------------------------------------------------------------------------
def layer_shapes(config: Qwen3NextConfig, prefix: str, layer_type: str) -> dict[str, Shape]:
    """Tensors of one decoder layer except its routed experts: norms, mixer, router, shared expert."""
    c, h = config, config.hidden_size
    shapes = {f"{prefix}.input_layernorm.weight": (h,), f"{prefix}.post_attention_layernorm.weight": (h,)}
    if layer_type == FULL_ATTENTION:
        q_dim, kv_dim = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        attn = f"{prefix}.self_attn"
        shapes |= {
            f"{attn}.q_proj.weight": (2 * q_dim, h),  # per head [query | gate]
            f"{attn}.k_proj.weight": (kv_dim, h),
            f"{attn}.v_proj.weight": (kv_dim, h),
            f"{attn}.o_proj.weight": (h, q_dim),
            f"{attn}.q_norm.weight": (c.head_dim,),
            f"{attn}.k_norm.weight": (c.head_dim,),
        }
    else:
        lin = f"{prefix}.linear_attn"
        shapes |= {
            f"{lin}.in_proj_qkvz.weight": (2 * c.linear_key_dim + 2 * c.linear_value_dim, h),
            f"{lin}.in_proj_ba.weight": (2 * c.linear_num_value_heads, h),
            f"{lin}.conv1d.weight": (c.linear_conv_dim, 1, c.linear_conv_kernel_dim),
            f"{lin}.A_log": (c.linear_num_value_heads,),
            f"{lin}.dt_bias": (c.linear_num_value_heads,),
            f"{lin}.norm.weight": (c.linear_value_head_dim,),
            f"{lin}.out_proj.weight": (h, c.linear_value_dim),
        }
    mlp, inter = f"{prefix}.mlp", c.shared_expert_intermediate_size
    return shapes | {
        f"{mlp}.gate.weight": (c.num_experts, h),
        f"{mlp}.shared_expert.gate_proj.weight": (inter, h),
        f"{mlp}.shared_expert.up_proj.weight": (inter, h),
        f"{mlp}.shared_expert.down_proj.weight": (h, inter),
        f"{mlp}.shared_expert_gate.weight": (1, h),
    }


def expert_shapes(config: Qwen3NextConfig) -> dict[str, Shape]:
    """Shape of one published expert tensor, by projection name."""
    inter, h = config.moe_intermediate_size, config.hidden_size
    return {"gate_proj": (inter, h), "up_proj": (inter, h), "down_proj": (h, inter)}


def published_shapes(config: Qwen3NextConfig, mtp_layers: int | None = None) -> dict[str, Shape]:
    """Every tensor of a checkpoint in the published layout, in model order.

    ``mtp_layers`` (default ``config.num_nextn_predict_layers``) full-attention MoE layers are added under ``mtp.*``.
    ``lm_head.weight`` is left out when the embeddings are tied.
    """
    mtp_layers = config.num_nextn_predict_layers if mtp_layers is None else mtp_layers
    h, vocab = config.hidden_size, config.vocab_size

    def moe_layer(prefix: str, layer_type: str) -> dict[str, Shape]:
        experts = {
            f"{prefix}.mlp.experts.{e}.{proj}.weight": shape
            for e in range(config.num_experts)
            for proj, shape in expert_shapes(config).items()
        }
        return layer_shapes(config, prefix, layer_type) | experts

    shapes = {"model.embed_tokens.weight": (vocab, h)}
    for i, layer_type in enumerate(config.layer_types):
        shapes |= moe_layer(f"model.layers.{i}", layer_type)
    shapes["model.norm.weight"] = (h,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab, h)
    if mtp_layers:
        shapes |= {"mtp.fc.weight": (h, 2 * h), "mtp.pre_fc_norm_embedding.weight": (h,),
                   "mtp.pre_fc_norm_hidden.weight": (h,)}
        for j in range(mtp_layers):
            shapes |= moe_layer(f"mtp.layers.{j}", FULL_ATTENTION)
        shapes["mtp.norm.weight"] = (h,)
    return shapes


def memory_shapes(config: Qwen3NextConfig) -> dict[str, Shape]:
    """Every tensor ``load_weights`` returns apart from ``mtp.*``, in model order (the in-memory layout)."""
    e, inter, h = config.num_experts, config.moe_intermediate_size, config.hidden_size
    shapes = {"model.embed_tokens.weight": (config.vocab_size, h)}
    for i, layer_type in enumerate(config.layer_types):
        prefix = f"model.layers.{i}"
        shapes |= layer_shapes(config, prefix, layer_type)
        shapes[f"{prefix}.mlp.experts.gate_up_proj"] = (e, 2 * inter, h)
        shapes[f"{prefix}.mlp.experts.down_proj"] = (e, h, inter)
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (config.vocab_size, h)
    return shapes


# ---- checkpoint files ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    """One tensor of a checkpoint as its file header describes it."""

    file: str
    name: str
    dtype: str
    shape: Shape

    @property
    def nbytes(self) -> int:
        return _FLOAT_DTYPES.get(self.dtype, 0) * math.prod(self.shape)


def _checkpoint_files(path: str) -> tuple[str, dict[str, list[str] | None]]:
    """(source shown in errors, {file: tensor names the index maps to it, or None for all of a single file})."""
    if os.path.isdir(path):
        index, single = os.path.join(path, INDEX_FILE), os.path.join(path, SINGLE_FILE)
    else:
        index, single = (path, None) if path.endswith(".json") else (None, path)
    if index and os.path.isfile(index):
        return index, _read_index(index)
    if single and os.path.isfile(single):
        return single, {single: None}
    raise FileNotFoundError(f"no safetensors weights at {path} (looked for {INDEX_FILE} or {SINGLE_FILE})")


def _read_index(index: str) -> dict[str, list[str]]:
    try:
        with open(index, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{index}: not valid JSON ({e})") from None
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index}: needs a 'weight_map' object mapping tensor names to shard file names")
    files: dict[str, list[str]] = defaultdict(list)
    for name, shard in weight_map.items():
        files[os.path.join(os.path.dirname(index), shard)].append(name)
    for file, names in files.items():
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"{index} maps {len(names)} tensor(s) (e.g. {names[0]}) to {file}, which does not exist")
    return dict(files)


def _read_header(file: str, indexed: list[str] | None, index: str) -> list[_Entry]:
    """The file's tensors; with an index, exactly the tensors it maps to this file."""
    try:
        with safe_open(file, framework="pt") as f:
            entries = {}
            for name in f.keys():
                info = f.get_slice(name)
                entries[name] = _Entry(file, name, info.get_dtype(), tuple(info.get_shape()))
    except SafetensorError as e:
        raise ValueError(f"{file}: unreadable safetensors file, truncated or corrupt? ({e})") from None
    if indexed is None:
        return list(entries.values())
    absent = [name for name in indexed if name not in entries]
    if absent:
        raise ValueError(f"{index} lists tensor {absent[0]} in {file}, but that file does not hold it "
                         f"({len(absent)} such tensor(s))")
    unlisted = sorted(set(entries) - set(indexed))
    if unlisted:
        raise ValueError(f"{file}: unexpected tensor {unlisted[0]}: not mapped to this file by {index}")
    return [entries[name] for name in indexed]


# ---- where each checkpoint tensor goes ----------------------------------------------------------
@dataclass(frozen=True)
class _Placement:
    """Where a checkpoint tensor lands in the in-memory dict."""

    target: str
    shape: Shape | None  # expected checkpoint shape; None = unchecked (unknown mtp.* tensors)
    expert: int | None = None  # a per-expert tensor: its index in the stacked target ...
    proj: str | None = None  # ... and its projection

    def slots(self, num_experts: int) -> list[tuple[str, int, str]]:
        """The (stack, expert, projection) slots this tensor fills; [] for a plain tensor."""
        if self.proj is not None:
            return [(self.target, self.expert, self.proj)]
        return [(self.target, e, proj) for e in range(num_experts) for proj in _stack_projs(self.target)]


def _stack_projs(name: str) -> tuple[str, ...]:
    """Published projections stacked into ``name`` (empty if it is not an expert stack)."""
    if name.endswith(".mlp.experts.gate_up_proj"):
        return ("gate_proj", "up_proj")
    if name.endswith(".mlp.experts.down_proj"):
        return ("down_proj",)
    return ()


class _Layout:
    """Maps checkpoint tensor names to their in-memory placement, for one config."""

    def __init__(self, config: Qwen3NextConfig):
        self.config = config
        self.shapes = memory_shapes(config)
        self.mtp_shapes = {k: v for k, v in published_shapes(config, mtp_layers=1).items() if k.startswith("mtp.")}

    def place(self, name: str) -> _Placement | None:
        """The placement of checkpoint tensor ``name``, or None if it does not belong to the model."""
        if name.startswith("mtp."):
            return _Placement(name, self.mtp_shapes.get(_MTP_LAYER.sub("mtp.layers.0.", name)))
        if name in self.shapes:
            return _Placement(name, self.shapes[name])
        match = _PER_EXPERT.match(name)
        if not match or match["proj"] not in EXPERT_PROJS or int(match["expert"]) >= self.config.num_experts:
            return None
        proj = match["proj"]
        target = f"{match['experts']}.{'down_proj' if proj == 'down_proj' else 'gate_up_proj'}"
        if target not in self.shapes:
            return None
        return _Placement(target, expert_shapes(self.config)[proj], int(match["expert"]), proj)


def _check_entry(entry: _Entry, layout: _Layout) -> _Placement:
    """The entry's placement; ValueError naming file and tensor if its dtype, name or shape is wrong."""
    where = f"{entry.file}: tensor {entry.name}"
    if entry.dtype.startswith("F8") or entry.name.endswith("_scale_inv"):
        raise ValueError(f"{where} is {entry.dtype}: FP8 checkpoints are not supported (use the bf16 checkpoint)")
    if entry.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{where} has dtype {entry.dtype}, expected a floating type ({', '.join(_FLOAT_DTYPES)})")
    placement = layout.place(entry.name)
    if placement is None:
        raise ValueError(f"{where} is unexpected: not part of a Qwen3-Next model with this config")
    if placement.shape is not None and entry.shape != placement.shape:
        raise ValueError(f"{where} has shape {list(entry.shape)}, expected {list(placement.shape)}")
    return placement


def _check_complete(entries: list[_Entry], placements: list[_Placement], layout: _Layout, source: str) -> None:
    """ValueError if a tensor (or an expert of a stack) is missing or given twice."""
    config = layout.config
    seen: dict[object, _Entry] = {}
    for entry, placement in zip(entries, placements):
        for key in placement.slots(config.num_experts) or [placement.target]:
            if key in seen:
                first = seen[key]
                raise ValueError(f"{entry.file}: tensor {entry.name} gives {placement.target} a second time "
                                 f"(already given by {first.name} in {first.file})")
            seen[key] = entry
    missing = []
    for name in layout.shapes:
        projs = _stack_projs(name)
        if not projs:
            if name not in seen and not (name == "lm_head.weight" and config.tie_word_embeddings):
                missing.append(name)
            continue
        absent = [(e, p) for e in range(config.num_experts) for p in projs if (name, e, p) not in seen]
        if len(absent) == config.num_experts * len(projs):
            missing.append(f"{name} (or its per-expert tensors)")
        else:
            missing += [f"{name.rsplit('.', 1)[0]}.{e}.{p}.weight" for e, p in absent]
    if missing:
        raise ValueError(f"{source}: {len(missing)} tensor(s) missing, e.g. {', '.join(missing[:4])}")


# ---- loading ------------------------------------------------------------------------------------
def load_weights(path: str | os.PathLike, config: Qwen3NextConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.bfloat16, progress: bool = True) -> dict[str, torch.Tensor]:
    """Load a checkpoint directory (or its ``.safetensors`` / index file) into the in-memory layout.

    All headers are checked against ``config`` first (names, shapes, dtypes, index consistency), so a bad
    checkpoint fails before any weight is read; errors name the file and the tensor. Tensors are then read
    one at a time and placed on ``device`` in ``dtype`` (``A_log``/``dt_bias`` in fp32); expert stacks are
    allocated on the device once and filled expert by expert, so host memory stays about one tensor.
    """
    source, files = _checkpoint_files(os.fspath(path))
    entries = [entry for file, names in files.items() for entry in _read_header(file, names, source)]
    layout = _Layout(config)
    placements = [_check_entry(entry, layout) for entry in entries]
    _check_complete(entries, placements, layout, source)

    out: dict[str, torch.Tensor] = {}
    with tqdm(total=sum(e.nbytes for e in entries), unit="B", unit_scale=True, desc="loading weights",
              disable=not progress) as bar:
        by_file = defaultdict(list)
        for entry, placement in zip(entries, placements):
            by_file[entry.file].append((entry, placement))
        for file, items in by_file.items():
            with safe_open(file, framework="pt") as f:
                for entry, placement in items:
                    _place(out, f.get_tensor(entry.name), placement, layout, device, dtype)
                    bar.update(entry.nbytes)
    if "lm_head.weight" not in out:  # tied embeddings
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    mtp = sorted((k for k in out if k.startswith("mtp.")), key=_natural_order)
    return {name: out[name] for name in [*layout.shapes, *mtp]}


def _natural_order(name: str) -> list:
    """Sort key putting ``layers.2`` before ``layers.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _place(out: dict[str, torch.Tensor], tensor: torch.Tensor, placement: _Placement, layout: _Layout,
           device: str | torch.device, dtype: torch.dtype) -> None:
    """Put one checkpoint tensor at its in-memory place (reordering in_proj rows, filling expert stacks)."""
    target, config = placement.target, layout.config
    if placement.expert is not None:
        if target not in out:
            out[target] = torch.empty(layout.shapes[target], device=device, dtype=dtype)
        stacked = out[target][placement.expert]
        if placement.proj in ("gate_proj", "up_proj"):  # its rows' blocks in the interleaved stack
            half = gate_up_halves(stacked, dim=0)[int(placement.proj == "up_proj")]
            half.copy_(tensor.reshape(half.shape))
        else:
            stacked.copy_(tensor)
        return
    tensor = tensor.to(device=device, dtype=storage_dtype(target, dtype))
    out[target] = _to_memory_layout(target, tensor, config)


def _to_memory_layout(name: str, tensor: torch.Tensor, config: Qwen3NextConfig) -> torch.Tensor:
    """A published tensor (experts stacked) in the in-memory layout: in_proj rows regrouped, gate_up interleaved."""
    if name.endswith("linear_attn.in_proj_qkvz.weight"):
        return reorder_in_proj_qkvz(tensor, config)
    if name.endswith("linear_attn.in_proj_ba.weight"):
        return reorder_in_proj_ba(tensor, config)
    if name.endswith(".mlp.experts.gate_up_proj"):
        return interleave_gate_up(tensor)
    return tensor
