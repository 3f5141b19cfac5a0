"""make_checkpoint: files, published layout, weight statistics, determinism, sharding and the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from qwen3next_cuda.config import FULL_ATTENTION, LINEAR_ATTENTION, Qwen3NextConfig
from qwen3next_cuda.tools.make_checkpoint import (make_checkpoint, parse_size, plan_shards, preset_config,
                                                  random_tensor)
from qwen3next_cuda.weights import INDEX_FILE, published_shapes

SHARDS = [f"model-0000{k}-of-00004.safetensors" for k in range(1, 5)]
MTP_NAMES = {  # the mtp.* tensors of the published Qwen3-Next-80B-A3B checkpoints, experts aside
    "mtp.fc.weight", "mtp.pre_fc_norm_embedding.weight", "mtp.pre_fc_norm_hidden.weight", "mtp.norm.weight",
    *(f"mtp.layers.0.{name}.weight" for name in (
        "input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
        "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm", "mlp.gate", "mlp.shared_expert.gate_proj",
        "mlp.shared_expert.up_proj", "mlp.shared_expert.down_proj", "mlp.shared_expert_gate")),
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> tuple[str, Qwen3NextConfig]:
    out = tmp_path_factory.mktemp("tiny")
    return str(out), make_checkpoint(out, "tiny", seed=3, shard_size="20MB", progress=False)


@pytest.fixture(scope="module")
def tensors(ckpt) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in SHARDS:
        with safe_open(os.path.join(ckpt[0], shard), framework="pt") as f:
            out |= {name: f.get_tensor(name) for name in f.keys()}
    return out


def test_files_and_configs(ckpt):
    out, config = ckpt
    assert sorted(os.listdir(out)) == sorted(["config.json", "generation_config.json", INDEX_FILE, *SHARDS,
                                              "tokenizer.json", "tokenizer_config.json"])
    assert Qwen3NextConfig.from_pretrained(out) == config == preset_config("tiny")
    assert config.layer_types == [LINEAR_ATTENTION] * 3 + [FULL_ATTENTION] and config.num_nextn_predict_layers == 1
    with open(os.path.join(out, "generation_config.json")) as f:
        assert json.load(f) == {"bos_token_id": 151643, "pad_token_id": 151643, "eos_token_id": [151645, 151643],
                                "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20}


def test_tokenizer_files(ckpt):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(ckpt[0], "tokenizer.json"))
    assert tokenizer.encode("<|im_end|>").ids == [151645]


def test_index_and_shards(ckpt, tensors):
    out, config = ckpt
    with open(os.path.join(out, INDEX_FILE)) as f:
        index = json.load(f)
    shapes = published_shapes(config)
    assert list(index["weight_map"]) == list(shapes)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    for shard in SHARDS:
        with safe_open(os.path.join(out, shard), framework="pt") as f:
            assert set(f.keys()) == {k for k, v in index["weight_map"].items() if v == shard}
    assert all(tuple(tensors[name].shape) == shape for name, shape in shapes.items())
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}


def test_published_names(tensors, ckpt):
    config = ckpt[1]
    experts = {f"{prefix}.mlp.experts.{e}.{proj}.weight" for prefix in ("model.layers.2", "mtp.layers.0")
               for e in range(config.num_experts) for proj in ("gate_proj", "up_proj", "down_proj")}
    assert experts <= set(tensors)
    assert {k for k in tensors if k.startswith("mtp.") and ".experts." not in k} == MTP_NAMES
    assert tensors["mtp.fc.weight"].shape == (128, 256)
    assert tensors["model.layers.0.linear_attn.conv1d.weight"].shape == (config.linear_conv_dim, 1, 4)
    assert "model.layers.0.self_attn.q_proj.weight" not in tensors and "model.layers.3.linear_attn.A_log" not in tensors


def test_weight_statistics(tensors):
    def stats(suffix):
        values = torch.cat([t.float().flatten() for k, t in tensors.items() if k.endswith(suffix)])
        return values.mean().item(), values.std().item(), values

    _, _, a_log = stats(".A_log")
    assert a_log.exp().min() >= 0.99 and a_log.exp().max() <= 16.1 and a_log.exp().std() > 2
    assert stats(".dt_bias")[0] == pytest.approx(1, abs=0.05)
    assert stats("linear_attn.norm.weight")[:2] == pytest.approx((1, 0.02), abs=0.01)
    assert stats("input_layernorm.weight")[:2] == pytest.approx((0, 0.02), abs=0.01)
    assert stats("in_proj_qkvz.weight")[:2] == pytest.approx((0, 0.02), abs=0.002)
    assert stats("experts.7.down_proj.weight")[:2] == pytest.approx((0, 0.02), abs=0.002)
    assert stats("conv1d.weight")[1] == pytest.approx(0.5, rel=0.1)


def test_random_tensor_is_deterministic():
    name = "model.layers.0.mlp.experts.3.up_proj.weight"
    first = random_tensor(name, (64, 128), seed=5)
    assert torch.equal(first, random_tensor(name, (64, 128), seed=5))
    assert not torch.equal(first, random_tensor(name, (64, 128), seed=6))
    assert not torch.equal(first, random_tensor(name.replace("up_proj", "gate_proj"), (64, 128), seed=5))


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        make_checkpoint(tmp_path, "tiny", tokenizer=False, progress=False)
    assert os.listdir(tmp_path) == ["keep.txt"]
    with pytest.raises(FileExistsError):
        make_checkpoint(tmp_path / "keep.txt", "tiny", tokenizer=False, progress=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        make_checkpoint(tmp_path / "a", "huge", progress=False)
    with pytest.raises(ValueError, match="variant"):
        make_checkpoint(tmp_path / "b", "tiny", variant="chat", progress=False)
    assert not os.listdir(tmp_path)


def test_thinking_variant_without_mtp(tmp_path):
    config = make_checkpoint(tmp_path, "tiny", layers=2, shard_size="1GB", variant="thinking", mtp=False,
                             progress=False)
    assert config.num_hidden_layers == 2 and config.num_nextn_predict_layers == 0
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert set(f.keys()) == set(published_shapes(config)) and not any(k.startswith("mtp.") for k in f.keys())
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert (generation["temperature"], generation["top_p"], generation["top_k"]) == (0.6, 0.95, 20)
    assert "<think>" in json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"]


def test_slice_preset_shapes():
    config = preset_config("slice")
    assert (config.hidden_size, config.num_experts, config.num_experts_per_tok) == (2048, 512, 10)
    assert (config.vocab_size, config.num_hidden_layers) == (151936, 4)
    assert config.layer_types == [LINEAR_ATTENTION] * 3 + [FULL_ATTENTION]
    shapes = published_shapes(config)
    assert shapes["model.layers.0.linear_attn.in_proj_qkvz.weight"] == (12288, 2048)
    assert shapes["model.layers.0.linear_attn.in_proj_ba.weight"] == (64, 2048)
    assert shapes["model.layers.0.linear_attn.conv1d.weight"] == (8192, 1, 4)
    assert shapes["model.layers.3.self_attn.q_proj.weight"] == (8192, 2048)
    assert shapes["mtp.fc.weight"] == (2048, 4096)
    main_bytes = sum(2 * math.prod(s) for k, s in shapes.items() if not k.startswith("mtp."))
    assert 14e9 < main_bytes < 15e9
    assert len(preset_config("slice", layers=8).full_attention_layers) == 2


def test_parse_size():
    assert parse_size(1000) == parse_size("1000") == parse_size("1KB") == 1000
    assert parse_size("500MB") == 500 * 10**6 and parse_size("2GB") == 2 * 10**9 and parse_size("1.5GiB") == 3 * 2**29
    for bad in ("", "-1", "0", "3 apples", "MB"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_plan_shards():
    shapes = {"a": (10,), "b": (10,), "c": (100,), "d": (5,), "e": (5,)}  # bf16: 20, 20, 200, 10, 10 bytes
    assert plan_shards(shapes, 50) == [["a", "b"], ["c"], ["d", "e"]]
    assert plan_shards(shapes, 10**6) == [list(shapes)]


def test_cli(tmp_path):
    out = tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "qwen3next_cuda.tools.make_checkpoint", str(out), "--preset", "tiny",
           "--layers", "1", "--seed", "7", "--shard-size", "30MB", "--no-mtp", "--no-tokenizer"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "python"),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote tiny checkpoint" in done.stdout
    assert Qwen3NextConfig.from_pretrained(out).num_hidden_layers == 1
    assert json.loads((out / INDEX_FILE).read_text())["weight_map"]["lm_head.weight"].endswith("-of-00003.safetensors")
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
