"""load_weights: the in-memory layout (against transformers), source layouts, device/dtype, and every error case."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwen3next_cuda import reference
from qwen3next_cuda.config import Qwen3NextConfig
from qwen3next_cuda.tools.make_checkpoint import make_checkpoint
from qwen3next_cuda.weights import (INDEX_FILE, SINGLE_FILE, load_weights, memory_shapes, reorder_in_proj_ba,
                                    reorder_in_proj_qkvz)

LAYER0_SHARD = "model-00002-of-00004.safetensors"  # with 20MB shards: embed | layers + norm | lm_head | mtp


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A sharded tiny checkpoint in the published layout (4 shards)."""
    out = tmp_path_factory.mktemp("tiny")
    make_checkpoint(out, "tiny", seed=1, shard_size="20MB", tokenizer=False, progress=False)
    assert sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))[1] == LAYER0_SHARD
    return str(out)


@pytest.fixture(scope="module")
def config(tiny) -> Qwen3NextConfig:
    return Qwen3NextConfig.from_pretrained(tiny)


@pytest.fixture(scope="module")
def weights(tiny, config) -> dict[str, torch.Tensor]:
    return load_weights(tiny, config, dtype=torch.float32, progress=False)


def assert_same(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(ref)
    for name, tensor in ref.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


# ---- layout ---------------------------------------------------------------------------------------
def test_matches_transformers_state_dict(tiny, config, weights):
    from transformers import Qwen3NextForCausalLM

    published = Qwen3NextForCausalLM.from_pretrained(tiny, dtype=torch.float32).state_dict()
    reorder = {"in_proj_qkvz.weight": reorder_in_proj_qkvz, "in_proj_ba.weight": reorder_in_proj_ba,
               "experts.gate_up_proj": lambda tensor, config: reference.interleave_gate_up(tensor)}
    assert set(published) == {k for k in weights if not k.startswith("mtp.")}
    for name, tensor in published.items():
        fix = next((f for suffix, f in reorder.items() if name.endswith(suffix)), None)
        expected = fix(tensor, config) if fix else tensor
        assert torch.equal(weights[name], expected), name


def test_keys_shapes_and_dtypes(tiny, config):
    weights = load_weights(tiny, config, dtype=torch.float16, progress=False)
    shapes = memory_shapes(config)
    assert [k for k in weights if not k.startswith("mtp.")] == list(shapes)
    for name, tensor in weights.items():
        fp32 = name.endswith((".A_log", ".dt_bias"))
        assert tensor.dtype == (torch.float32 if fp32 else torch.float16), name
        assert tensor.device.type == "cpu"
        if name in shapes:
            assert tuple(tensor.shape) == shapes[name], name
    gate_up = weights["model.layers.0.mlp.experts.gate_up_proj"]
    assert gate_up.shape == (16, 128, 128) and weights["model.layers.3.mlp.experts.down_proj"].shape == (16, 128, 64)
    mtp = {k for k in weights if k.startswith("mtp.")}
    assert {"mtp.fc.weight", "mtp.norm.weight", "mtp.layers.0.self_attn.q_proj.weight",
            "mtp.layers.0.mlp.experts.15.down_proj.weight"} <= mtp


def test_expert_stacking(tiny, weights):
    published = load_file(os.path.join(tiny, LAYER0_SHARD))
    for e in (0, 7, 15):
        src = f"model.layers.1.mlp.experts.{e}"
        gate, up = reference.split_gate_up(weights["model.layers.1.mlp.experts.gate_up_proj"][e])
        assert torch.equal(gate, published[f"{src}.gate_proj.weight"].float())
        assert torch.equal(up, published[f"{src}.up_proj.weight"].float())
        assert torch.equal(weights["model.layers.1.mlp.experts.down_proj"][e],
                           published[f"{src}.down_proj.weight"].float())


def test_single_file_equals_sharded(tmp_path, config, weights):
    make_checkpoint(tmp_path, "tiny", seed=1, shard_size="1GB", tokenizer=False, progress=False)
    assert not (tmp_path / INDEX_FILE).exists()
    assert_same(load_weights(tmp_path / SINGLE_FILE, config, dtype=torch.float32, progress=False), weights)


def test_fused_experts_equal_per_expert(tmp_path, tiny, config, weights):
    tensors = _all_tensors(tiny)
    for i in range(config.num_hidden_layers):
        experts = f"model.layers.{i}.mlp.experts"
        pop = lambda e, proj: tensors.pop(f"{experts}.{e}.{proj}.weight")  # noqa: E731
        tensors[f"{experts}.gate_up_proj"] = torch.stack(
            [torch.cat([pop(e, "gate_proj"), pop(e, "up_proj")]) for e in range(config.num_experts)])
        tensors[f"{experts}.down_proj"] = torch.stack([pop(e, "down_proj") for e in range(config.num_experts)])
    save_file(tensors, tmp_path / SINGLE_FILE)
    assert_same(load_weights(tmp_path, config, dtype=torch.float32, progress=False), weights)

    del tensors["model.layers.2.mlp.experts.down_proj"]
    save_file(tensors, tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match=re.escape("model.layers.2.mlp.experts.down_proj (or its per-expert")):
        load_weights(tmp_path / "partial.safetensors", config, progress=False)


def test_transformers_saved_checkpoint(tmp_path, tiny, config, weights):
    from transformers import Qwen3NextForCausalLM

    Qwen3NextForCausalLM.from_pretrained(tiny, dtype=torch.float32).save_pretrained(tmp_path)
    loaded = load_weights(tmp_path, config, dtype=torch.float32, progress=False)
    assert_same(loaded, {k: v for k, v in weights.items() if not k.startswith("mtp.")})


def test_tied_embeddings(tmp_path, tiny):
    tensors = _all_tensors(tiny)
    del tensors["lm_head.weight"]
    save_file(tensors, tmp_path / SINGLE_FILE)
    raw = json.loads(open(os.path.join(tiny, "config.json")).read())
    with pytest.raises(ValueError, match=re.escape("lm_head.weight")):
        load_weights(tmp_path, Qwen3NextConfig.from_dict(raw), progress=False)
    loaded = load_weights(tmp_path, Qwen3NextConfig.from_dict({**raw, "tie_word_embeddings": True}), progress=False)
    assert loaded["lm_head.weight"] is loaded["model.embed_tokens.weight"]


def test_inputs_untouched_and_progress(tiny, config, capsys):
    before = _snapshot(tiny)
    config_before = config.to_dict()
    load_weights(tiny, config, progress=True)
    assert _snapshot(tiny) == before and config.to_dict() == config_before
    assert "loading weights" in capsys.readouterr().err


@pytest.mark.cuda
def test_cuda_device(tiny, config, weights):
    loaded = load_weights(tiny, config, device="cuda", progress=False)
    assert all(t.device.type == "cuda" for t in loaded.values())
    name = "model.layers.2.mlp.experts.gate_up_proj"
    assert torch.equal(loaded[name].cpu().float(), weights[name].bfloat16().float())


# ---- errors ---------------------------------------------------------------------------------------
def _all_tensors(ckpt: str) -> dict[str, torch.Tensor]:
    with open(os.path.join(ckpt, INDEX_FILE)) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    return {k: v for file in files for k, v in load_file(os.path.join(ckpt, file)).items()}


def _snapshot(ckpt: str) -> list[tuple[str, int, int]]:
    return sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(ckpt))


def _broken_copy(tiny: str, dst, edit_shard=None, edit_index=None) -> str:
    """``tiny`` with its layer shard rewritten by ``edit_shard(tensors)`` and its weight map by ``edit_index``;
    the other files are symlinks, so the copy is cheap."""
    for entry in os.scandir(tiny):
        if entry.name not in (LAYER0_SHARD, INDEX_FILE):
            os.symlink(entry.path, dst / entry.name)
    tensors = load_file(os.path.join(tiny, LAYER0_SHARD))
    if edit_shard:
        edit_shard(tensors)
    save_file(tensors, dst / LAYER0_SHARD)
    with open(os.path.join(tiny, INDEX_FILE)) as f:
        index = json.load(f)
    if edit_index:
        edit_index(index["weight_map"])
    (dst / INDEX_FILE).write_text(json.dumps(index))
    return str(dst)


ROUTER = "model.layers.0.mlp.gate.weight"
EXPERT = "model.layers.1.mlp.experts.5.up_proj.weight"
Q_PROJ = "model.layers.3.self_attn.q_proj.weight"


def _drop(name):
    return lambda d: d.pop(name)


def _add(name, value):
    return lambda d: d.__setitem__(name, value)


@pytest.mark.parametrize("edit_shard, edit_index, error, patterns", [
    (_drop(ROUTER), _drop(ROUTER), ValueError, ["missing", ROUTER, INDEX_FILE]),
    (_drop(EXPERT), _drop(EXPERT), ValueError, ["missing", EXPERT]),
    (_drop(ROUTER), None, ValueError, [ROUTER, LAYER0_SHARD, "does not hold"]),
    (_add("model.layers.0.extra.weight", torch.zeros(2)), _add("model.layers.0.extra.weight", LAYER0_SHARD),
     ValueError, ["unexpected", "model.layers.0.extra.weight", LAYER0_SHARD]),
    (_add("model.layers.0.extra.weight", torch.zeros(2)), None,
     ValueError, ["unexpected", "model.layers.0.extra.weight", LAYER0_SHARD, "not mapped"]),
    (_add(ROUTER, torch.zeros(16, 127)), None,
     ValueError, ["shape", ROUTER, LAYER0_SHARD, r"\[16, 127\]", r"\[16, 128\]"]),
    (_add(ROUTER, torch.zeros(16, 128, dtype=torch.int32)), None, ValueError, ["dtype", "I32", ROUTER, LAYER0_SHARD]),
    (_add(EXPERT, torch.zeros(64, 128, dtype=torch.float8_e4m3fn)), None,
     ValueError, ["FP8 checkpoints are not supported", EXPERT, LAYER0_SHARD]),
    (_add(Q_PROJ + "_scale_inv", torch.ones(2, 1)), _add(Q_PROJ + "_scale_inv", LAYER0_SHARD),
     ValueError, ["FP8 checkpoints are not supported", Q_PROJ + "_scale_inv"]),
    (_add("model.layers.1.mlp.experts.gate_up_proj", torch.zeros(16, 128, 128)),
     _add("model.layers.1.mlp.experts.gate_up_proj", LAYER0_SHARD),
     ValueError, ["second time", "already given", "experts.0.gate_proj"]),
    (_add("model.layers.1.mlp.experts.16.up_proj.weight", torch.zeros(64, 128)),
     _add("model.layers.1.mlp.experts.16.up_proj.weight", LAYER0_SHARD), ValueError, ["unexpected", "experts.16"]),
    (None, _add(ROUTER, "model-00009-of-00004.safetensors"), FileNotFoundError, ["model-00009-of-00004", ROUTER]),
])
def test_broken_tensors(tmp_path, tiny, config, edit_shard, edit_index, error, patterns):
    ckpt = _broken_copy(tiny, tmp_path, edit_shard, edit_index)
    with pytest.raises(error) as info:
        load_weights(ckpt, config, progress=False)
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), f"{pattern!r} not in: {info.value}"


@pytest.mark.parametrize("damage", ["truncate", "header", "empty"])
def test_damaged_shard(tmp_path, tiny, config, damage):
    ckpt = _broken_copy(tiny, tmp_path)
    shard = tmp_path / LAYER0_SHARD
    data = shard.read_bytes()
    shard.write_bytes({"truncate": data[: len(data) // 2], "header": data[:8] + b"{garbage" + data[16:],
                       "empty": b""}[damage])
    with pytest.raises(ValueError, match=re.escape(str(shard))):
        load_weights(ckpt, config, progress=False)


def test_missing_shard(tmp_path, tiny, config):
    ckpt = _broken_copy(tiny, tmp_path)
    os.remove(tmp_path / LAYER0_SHARD)
    with pytest.raises(FileNotFoundError, match=LAYER0_SHARD):
        load_weights(ckpt, config, progress=False)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"weight_map": {"a": 3}}'])
def test_corrupt_index(tmp_path, tiny, config, text):
    ckpt = _broken_copy(tiny, tmp_path)
    (tmp_path / INDEX_FILE).write_text(text)
    with pytest.raises(ValueError, match=INDEX_FILE):
        load_weights(ckpt, config, progress=False)


def test_no_weights(tmp_path, config):
    with pytest.raises(FileNotFoundError, match=f"{INDEX_FILE}|{SINGLE_FILE}"):
        load_weights(tmp_path, config, progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_weights(tmp_path / "nowhere" / SINGLE_FILE, config, progress=False)


def test_config_mismatch_names_tensor(tiny, config):
    expected = r"model.embed_tokens.weight has shape \[151936, 128\], expected \[151936, 256\]"
    with pytest.raises(ValueError, match=expected):
        load_weights(tiny, dataclasses.replace(config, hidden_size=256), progress=False)
