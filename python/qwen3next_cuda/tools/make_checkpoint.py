"""Write a random-weight Qwen3-Next checkpoint in the published layout.

    python -m qwen3next_cuda.tools.make_checkpoint OUT --preset tiny|narrow|slice [--layers N] [--seed S]
        [--shard-size 2GB] [--variant instruct|thinking] [--no-mtp] [--no-tokenizer]

The files are those of a released checkpoint: ``config.json``, ``generation_config.json``, bf16 safetensors
(one ``model.safetensors``, or shards plus ``model.safetensors.index.json``) with per-expert tensors, grouped
``in_proj`` rows and ``mtp.*`` tensors, and the tokenizer files. Presets:
  * ``tiny``: the real structure at toy width (hidden 128, 16 experts top-4), real vocabulary; for tests.
  * ``slice``: the real 80B width (hidden 2048, 512 experts top-10) with N layers (default 4 = 3 DeltaNet +
    1 attention, about 14 GB, plus 3.3 GB for the MTP layer); for benchmarks.
Each tensor is drawn from its own generator seeded by (seed, name), so the weights depend on the seed only,
not on the shard size; shards are generated and written one at a time, so memory stays about one shard.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ..config import Qwen3NextConfig
from ..reference.moe import interleave_gate_up
from ..weights import INDEX_FILE, SINGLE_FILE, Shape, memory_shapes, published_shapes, storage_dtype

PRESETS: dict[str, dict] = {
    "tiny": dict(
        hidden_size=128, num_experts=16, num_experts_per_tok=4, moe_intermediate_size=64,
        shared_expert_intermediate_size=128, linear_num_key_heads=4, linear_num_value_heads=8,
        linear_key_head_dim=32, linear_value_head_dim=32, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
    ),
    # the tiny structure with the published head sizes (128-wide DeltaNet heads, 256-wide attention heads), so that
    # every op of a step runs its GPU kernel (tests of the whole model on a GPU, CUDA graphs)
    "narrow": dict(
        hidden_size=256, num_experts=16, num_experts_per_tok=4, moe_intermediate_size=64,
        shared_expert_intermediate_size=128, linear_num_key_heads=2, linear_num_value_heads=4,
        num_attention_heads=4, num_key_value_heads=1,
    ),
    "slice": {},  # the published 80B-A3B widths (the config defaults)
}
GENERATION_CONFIGS = {  # as published for Qwen3-Next-80B-A3B-Instruct / -Thinking
    "instruct": {"temperature": 0.7, "top_p": 0.8, "top_k": 20},
    "thinking": {"temperature": 0.6, "top_p": 0.95, "top_k": 20},
}
DEFAULT_SHARD_SIZE = "2GB"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def preset_config(preset: str, layers: int | None = None, mtp: bool = True) -> Qwen3NextConfig:
    """The config of a preset with ``layers`` decoder layers (default 4; every 4th is full attention)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    return Qwen3NextConfig(num_hidden_layers=4 if layers is None else layers,
                           num_nextn_predict_layers=int(mtp), **PRESETS[preset])


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as ``"2GB"``, ``"500MB"``, ``"64MiB"`` or ``"1000000"``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", str(size), flags=re.IGNORECASE)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"invalid size {size!r}: expected bytes or a number with KB/MB/GB (or KiB/MiB/GiB)")
    return int(float(match[1]) * _SIZE_UNITS[(match[2] or "").upper()])


def random_tensor(name: str, shape: Shape, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """A bf16 tensor for ``name`` with the scale its role needs, from a generator on ``device`` seeded by
    (seed, name)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    gen = torch.Generator(device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    t = torch.empty(shape, dtype=torch.float32, device=device)
    if name.endswith(".A_log"):  # decay rate A = exp(A_log) in [1, 16]
        t.uniform_(1.0, 16.0, generator=gen).log_()
    elif name.endswith(".dt_bias"):
        t.normal_(1.0, 0.1, generator=gen)
    elif name.endswith("linear_attn.norm.weight"):  # gated RMSNorm: plain weight around 1
        t.normal_(1.0, 0.02, generator=gen)
    elif name.endswith("conv1d.weight"):  # depthwise taps: keep the conv output at the input's scale
        t.normal_(0.0, shape[-1] ** -0.5, generator=gen)
    else:  # linear weights, embeddings (std 0.02) and zero-centred RMSNorm weights (1 + w, w small around 0)
        t.normal_(0.0, 0.02, generator=gen)
    return t.to(torch.bfloat16)


def random_weights(config: Qwen3NextConfig, seed: int = 0, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Random weights in the in-memory layout (``weights.memory_shapes``), drawn on ``device`` with the
    checkpoint's scales: a model without files (a GPU draws the full-width slice at once). The experts' gate_up
    stacks are drawn gate rows first, as published, then interleaved as the loader stores them."""
    def draw(name: str, shape: Shape) -> torch.Tensor:
        tensor = random_tensor(name, shape, seed, device)
        return interleave_gate_up(tensor) if name.endswith(".mlp.experts.gate_up_proj") else tensor

    return {name: draw(name, shape).to(storage_dtype(name, dtype)) for name, shape in memory_shapes(config).items()}


def plan_shards(shapes: dict[str, Shape], shard_bytes: int) -> list[list[str]]:
    """Consecutive tensor names grouped so each group stays within ``shard_bytes`` (one oversized tensor alone)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, shape in shapes.items():
        size = 2 * math.prod(shape)
        if shards[-1] and used + size > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def make_checkpoint(out_dir: str | os.PathLike, preset: str = "tiny", layers: int | None = None, seed: int = 0,
                    shard_size: int | str = DEFAULT_SHARD_SIZE, variant: str = "instruct", mtp: bool = True,
                    tokenizer: bool = True, progress: bool = True) -> Qwen3NextConfig:
    """Write a random-weight checkpoint of ``preset`` to ``out_dir`` (new or empty) and return its config.

    ``mtp`` adds the one ``mtp.*`` layer of the release; ``tokenizer`` writes the ``variant``'s tokenizer files.
    """
    if variant not in GENERATION_CONFIGS:
        raise ValueError(f"unknown variant '{variant}' (choose from {', '.join(GENERATION_CONFIGS)})")
    config = preset_config(preset, layers, mtp)
    shard_bytes = parse_size(shard_size)
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise FileExistsError(f"{out_dir} exists and is not an empty directory; refusing to overwrite it")
    os.makedirs(out_dir, exist_ok=True)

    config.to_json_file(os.path.join(out_dir, "config.json"))
    _write_json(os.path.join(out_dir, "generation_config.json"), {
        "bos_token_id": 151643, "pad_token_id": 151643, "eos_token_id": [151645, 151643], "do_sample": True,
        **GENERATION_CONFIGS[variant],
    })
    _write_weights(out_dir, published_shapes(config), seed, shard_bytes, progress)
    if tokenizer:
        from ..tokenizer import write_tokenizer_files  # here: weight-only checkpoints need no tokenizer packages

        write_tokenizer_files(out_dir, variant=variant)
    return config


def _write_weights(out_dir: str, shapes: dict[str, Shape], seed: int, shard_bytes: int, progress: bool) -> None:
    """Generate and write the safetensors shards one at a time, then the index (if sharded)."""
    shards = plan_shards(shapes, shard_bytes)
    files = [SINGLE_FILE] if len(shards) == 1 else [
        f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    total = sum(2 * math.prod(shape) for shape in shapes.values())
    with tqdm(total=total, unit="B", unit_scale=True, desc="writing weights", disable=not progress) as bar:
        for file, names in zip(files, shards):
            tensors = {}
            for name in names:
                tensors[name] = random_tensor(name, shapes[name], seed)
                bar.update(tensors[name].nbytes)
            save_file(tensors, os.path.join(out_dir, file), metadata={"format": "pt"})
            del tensors
    if len(shards) > 1:
        weight_map = {name: file for file, names in zip(files, shards) for name in names}
        _write_json(os.path.join(out_dir, INDEX_FILE), {"metadata": {"total_size": total}, "weight_map": weight_map})


def _write_json(file: str, obj: dict) -> None:
    with open(file, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qwen3next_cuda.tools.make_checkpoint",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output directory (must not exist or be empty)")
    parser.add_argument("--preset", choices=list(PRESETS), required=True)
    parser.add_argument("--layers", type=int, help="decoder layers (default 4: 3 DeltaNet + 1 attention)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", default=DEFAULT_SHARD_SIZE, help="bytes, or e.g. 500MB, 2GB (default 2GB)")
    parser.add_argument("--variant", choices=list(GENERATION_CONFIGS), default="instruct")
    parser.add_argument("--no-mtp", dest="mtp", action="store_false", help="leave out the mtp.* layer")
    parser.add_argument("--no-tokenizer", dest="tokenizer", action="store_false", help="skip the tokenizer files")
    args = parser.parse_args(argv)
    try:
        config = make_checkpoint(args.out, args.preset, args.layers, args.seed, args.shard_size, args.variant,
                                 args.mtp, args.tokenizer)
    except (ValueError, FileExistsError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {args.preset} checkpoint ({config.num_hidden_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_experts} experts) to {args.out}")


if __name__ == "__main__":
    main()
