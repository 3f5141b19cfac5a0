"""config.json -> Qwen3NextConfig, with validation and clear errors.

Accepts both the published form (top-level ``rope_theta``, ``partial_rotary_factor``,
``rope_scaling``, ``full_attention_interval``) and the transformers-5 form
(``rope_parameters``, ``layer_types``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

LINEAR_ATTENTION = "linear_attention"
FULL_ATTENTION = "full_attention"
_ROPE_TYPES = ("default", "yarn")


@dataclass
class RopeConfig:
    theta: float = 1e7
    partial_rotary_factor: float = 0.25
    type: str = "default"  # "default" or "yarn"
    factor: float = 1.0  # yarn: context extension factor
    original_max_position_embeddings: int | None = None  # yarn
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn: None -> 0.1 * ln(factor) + 1
    mscale: float | None = None  # yarn (DeepSeek-style), optional
    mscale_all_dim: float | None = None  # yarn (DeepSeek-style), optional
    truncate: bool = True  # yarn


@dataclass
class Qwen3NextConfig:
    vocab_size: int = 151936
    hidden_size: int = 2048
    num_hidden_layers: int = 48
    layer_types: list[str] = field(default_factory=list)  # derived from full_attention_interval if empty
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 262144
    # gated attention
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    head_dim: int = 256
    rope: RopeConfig = field(default_factory=RopeConfig)
    # gated DeltaNet
    linear_num_key_heads: int = 16
    linear_num_value_heads: int = 32
    linear_key_head_dim: int = 128
    linear_value_head_dim: int = 128
    linear_conv_kernel_dim: int = 4
    # sparse MoE
    num_experts: int = 512
    num_experts_per_tok: int = 10
    moe_intermediate_size: int = 512
    shared_expert_intermediate_size: int = 512
    norm_topk_prob: bool = True
    # multi-token prediction
    num_nextn_predict_layers: int = 0
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151645

    def __post_init__(self):
        if not self.layer_types:
            self.layer_types = layer_types_from_interval(self.num_hidden_layers, 4)
        self.validate()

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rope.partial_rotary_factor)

    @property
    def linear_key_dim(self) -> int:  # q (or k) channels of a DeltaNet layer
        return self.linear_num_key_heads * self.linear_key_head_dim

    @property
    def linear_value_dim(self) -> int:  # v (or z) channels of a DeltaNet layer
        return self.linear_num_value_heads * self.linear_value_head_dim

    @property
    def linear_conv_dim(self) -> int:  # channels through the causal conv: [q | k | v]
        return 2 * self.linear_key_dim + self.linear_value_dim

    @property
    def full_attention_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == FULL_ATTENTION]

    @property
    def linear_attention_layers(self) -> list[int]:
        return [i for i, t in enumerate(self.layer_types) if t == LINEAR_ATTENTION]

    @property
    def eos_token_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return list(self.eos_token_id) if isinstance(self.eos_token_id, (list, tuple)) else [self.eos_token_id]

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        positive = (
            "vocab_size hidden_size num_hidden_layers num_attention_heads num_key_value_heads head_dim "
            "linear_num_key_heads linear_num_value_heads linear_key_head_dim linear_value_head_dim "
            "linear_conv_kernel_dim num_experts num_experts_per_tok moe_intermediate_size "
            "shared_expert_intermediate_size max_position_embeddings"
        ).split()
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"config field '{name}' must be a positive integer, got {value!r}")
        if not (isinstance(self.rms_norm_eps, (int, float)) and self.rms_norm_eps > 0):
            raise ValueError(f"config field 'rms_norm_eps' must be a positive number, got {self.rms_norm_eps!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.linear_num_value_heads % self.linear_num_key_heads:
            raise ValueError(
                f"linear_num_value_heads ({self.linear_num_value_heads}) must be a multiple of "
                f"linear_num_key_heads ({self.linear_num_key_heads})"
            )
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds num_experts ({self.num_experts})"
            )
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries but num_hidden_layers is {self.num_hidden_layers}"
            )
        bad = sorted({t for t in self.layer_types if t not in (LINEAR_ATTENTION, FULL_ATTENTION)})
        if bad:
            raise ValueError(f"layer_types holds unknown types {bad}; expected '{LINEAR_ATTENTION}' or '{FULL_ATTENTION}'")
        rope = self.rope
        if rope.type not in _ROPE_TYPES:
            raise ValueError(f"rope type '{rope.type}' is not supported (supported: {', '.join(_ROPE_TYPES)})")
        if not 0 < rope.partial_rotary_factor <= 1:
            raise ValueError(f"partial_rotary_factor must be in (0, 1], got {rope.partial_rotary_factor}")
        if self.rotary_dim % 2:
            raise ValueError(f"rotary dimension head_dim * partial_rotary_factor = {self.rotary_dim} must be even")
        if not rope.theta > 0:
            raise ValueError(f"rope_theta must be positive, got {rope.theta}")
        if rope.type == "yarn" and not rope.factor >= 1:
            raise ValueError(f"yarn rope_scaling factor must be >= 1, got {rope.factor}")
        if self.num_nextn_predict_layers < 0:
            raise ValueError(f"num_nextn_predict_layers must be >= 0, got {self.num_nextn_predict_layers}")

    # ---- (de)serialisation -----------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict) -> "Qwen3NextConfig":
        if raw.get("model_type", "qwen3_next") != "qwen3_next":
            raise ValueError(f"config model_type is '{raw.get('model_type')}', expected 'qwen3_next'")
        if raw.get("mlp_only_layers"):
            raise ValueError("config 'mlp_only_layers' is not supported: every Qwen3-Next layer is a sparse MoE layer")
        if raw.get("decoder_sparse_step", 1) != 1:
            raise ValueError("config 'decoder_sparse_step' must be 1: every Qwen3-Next layer is a sparse MoE layer")
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config 'hidden_act' must be 'silu', got {raw.get('hidden_act')!r}")
        if raw.get("attention_bias", False):
            raise ValueError("config 'attention_bias' = true is not supported by Qwen3-Next")

        required = ("vocab_size", "hidden_size", "num_hidden_layers")
        missing = [k for k in required if k not in raw]
        if missing:
            raise ValueError(f"config is missing required fields: {', '.join(missing)}")

        names = {f.name for f in dataclasses.fields(cls)} - {"rope", "layer_types"}
        kwargs = {k: raw[k] for k in names if k in raw and raw[k] is not None}
        kwargs["rope"] = _rope_from_dict(raw)
        layer_types = raw.get("layer_types")
        if layer_types is None:
            interval = raw.get("full_attention_interval", 4)
            if not isinstance(interval, int) or interval <= 0:
                raise ValueError(f"config field 'full_attention_interval' must be a positive integer, got {interval!r}")
            layer_types = layer_types_from_interval(raw["num_hidden_layers"], interval)
        kwargs["layer_types"] = list(layer_types)
        if "num_nextn_predict_layers" not in raw and "mtp_num_hidden_layers" in raw:
            kwargs["num_nextn_predict_layers"] = raw["mtp_num_hidden_layers"]
        return cls(**kwargs)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "Qwen3NextConfig":
        """Read ``config.json`` from a checkpoint directory (or the file itself)."""
        path = os.fspath(path)
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no config.json at {file}")
        try:
            with open(file, encoding="utf-8") as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{file} is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{file} must hold a JSON object")
        try:
            return cls.from_dict(raw)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{file}: {e}") from None

    def to_dict(self) -> dict:
        """The published config.json form (what the released checkpoints ship)."""
        out = {
            "architectures": ["Qwen3NextForCausalLM"],
            "model_type": "qwen3_next",
            "hidden_act": "silu",
            "attention_bias": False,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "torch_dtype": "bfloat16",
        }
        for f in dataclasses.fields(self):
            if f.name not in ("rope",):
                out[f.name] = getattr(self, f.name)
        out["full_attention_interval"] = _interval_of(self.layer_types)
        out["rope_theta"] = self.rope.theta
        out["partial_rotary_factor"] = self.rope.partial_rotary_factor
        out["rope_scaling"] = None
        if self.rope.type == "yarn":
            out["rope_scaling"] = {
                "rope_type": "yarn",
                "factor": self.rope.factor,
                "original_max_position_embeddings": self.rope.original_max_position_embeddings,
                "beta_fast": self.rope.beta_fast,
                "beta_slow": self.rope.beta_slow,
            }
            if self.rope.attention_factor is not None:
                out["rope_scaling"]["attention_factor"] = self.rope.attention_factor
        return out

    def to_json_file(self, file: str | os.PathLike) -> None:
        with open(file, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")


def layer_types_from_interval(num_layers: int, interval: int) -> list[str]:
    """Every ``interval``-th layer (1-based) is full attention, the rest Gated DeltaNet."""
    return [FULL_ATTENTION if (i + 1) % interval == 0 else LINEAR_ATTENTION for i in range(num_layers)]


def _interval_of(layer_types: list[str]) -> int | None:
    for interval in range(1, len(layer_types) + 1):
        if layer_types_from_interval(len(layer_types), interval) == layer_types:
            return interval
    return None


def _rope_from_dict(raw: dict) -> RopeConfig:
    params = raw.get("rope_parameters")
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"config field 'rope_parameters' must be an object, got {params!r}")
    scaling = raw.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise ValueError(f"config field 'rope_scaling' must be an object or null, got {scaling!r}")
    merged = {**(scaling or {}), **(params or {})}
    rope_type = merged.get("rope_type", merged.get("type", "default"))
    theta = merged.get("rope_theta", raw.get("rope_theta", 1e7))
    partial = merged.get("partial_rotary_factor", raw.get("partial_rotary_factor", 0.25))
    rope = RopeConfig(theta=float(theta), partial_rotary_factor=float(partial), type=rope_type)
    if rope_type == "yarn":
        if "factor" not in merged:
            raise ValueError("yarn rope scaling needs a 'factor'")
        rope.factor = float(merged["factor"])
        rope.original_max_position_embeddings = merged.get(
            "original_max_position_embeddings", raw.get("max_position_embeddings")
        )
        for key in ("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"):
            if merged.get(key) is not None:
                setattr(rope, key, merged[key])
    return rope
