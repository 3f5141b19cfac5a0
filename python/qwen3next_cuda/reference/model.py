"""The whole Qwen3-Next model composed from the ops, with a preallocated hybrid cache.

Every op goes through ``self.ops`` (default: this reference package), so the product model can run the same
composition on ``qwen3next_cuda.ops``; the dense projections are torch matmuls in both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import LINEAR_ATTENTION, Qwen3NextConfig
from .moe import MoEWeights


class HybridCache:
    """Per-layer state of ``batch`` sequences of equal length (at most ``max_len`` tokens).

    key[i], value[i]: [B, max_len, Hkv, D] (model dtype) for each full-attention layer i;
    conv[i]: [B, C, K-1] (model dtype) and recurrent[i]: [B, Hv, dk, dv] (fp32) for each DeltaNet layer i;
    length: the number of tokens already processed.
    """

    def __init__(self, config: Qwen3NextConfig, batch: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str):
        def zeros(shape, dtype=dtype):
            return torch.zeros(shape, dtype=dtype, device=device)

        kv_shape = (batch, max_len, config.num_key_value_heads, config.head_dim)
        conv_shape = (batch, config.linear_conv_dim, config.linear_conv_kernel_dim - 1)
        state_shape = (batch, config.linear_num_value_heads, config.linear_key_head_dim, config.linear_value_head_dim)
        self.key = {i: zeros(kv_shape) for i in config.full_attention_layers}
        self.value = {i: zeros(kv_shape) for i in config.full_attention_layers}
        self.conv = {i: zeros(conv_shape) for i in config.linear_attention_layers}
        self.recurrent = {i: zeros(state_shape, torch.float32) for i in config.linear_attention_layers}
        self.batch, self.max_len, self.length = batch, max_len, 0


class Qwen3NextReference:
    """Qwen3-Next causal LM over the in-memory weight dict (see ``qwen3next_cuda.weights``).

    ``weights`` holds transformers-5 state-dict names with the DeltaNet in_proj rows in ``[q|k|v|z]`` / ``[b|a]``
    order; ``mtp.*`` entries are ignored. The model computes in the dtype of the embedding.
    """

    def __init__(self, config: Qwen3NextConfig, weights: dict[str, torch.Tensor], ops=None):
        if ops is None:
            from qwen3next_cuda import reference as ops
        self.config, self.weights, self.ops = config, weights, ops
        self.embed = weights["model.embed_tokens.weight"]
        if "lm_head.weight" in weights:
            self.lm_head = weights["lm_head.weight"]
        elif config.tie_word_embeddings:
            self.lm_head = self.embed
        else:
            raise KeyError("weights have no 'lm_head.weight' and the config does not tie word embeddings")
        self.moe_weights = [MoEWeights.from_state_dict(weights, f"model.layers.{i}.mlp.")
                            for i in range(config.num_hidden_layers)]

    def new_cache(self, batch: int, max_len: int) -> HybridCache:
        """An empty cache for ``batch`` sequences of up to ``max_len`` tokens, on the weights' device and dtype."""
        return HybridCache(self.config, batch, max_len, self.embed.dtype, self.embed.device)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, cache: HybridCache | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Run ``input_ids`` [B, T] after the ``cache.length`` tokens already in ``cache`` (updated in place).

        Without a cache the tokens are a whole sequence. T == 1 takes the single-step decode ops; T > 1 the
        chunked ones (from the cached state when there is one). Returns fp32 logits [B, T, V], or [B, 1, V]
        for the last position only when ``last_only``.
        """
        config, ops = self.config, self.ops
        batch, num_tokens = input_ids.shape
        if cache is None:
            cache = self.new_cache(batch, num_tokens)
        if cache.batch != batch:
            raise ValueError(f"cache holds {cache.batch} sequences but input_ids has {batch} rows")
        if cache.length + num_tokens > cache.max_len:
            raise ValueError(f"{cache.length} cached + {num_tokens} new tokens exceed the cache size {cache.max_len}")

        positions = torch.arange(cache.length, cache.length + num_tokens, device=input_ids.device)
        cos, sin = ops.rope_cos_sin(positions, config)
        residual = F.embedding(input_ids, self.embed)
        hidden = ops.rmsnorm(residual, self._layer(0, "input_layernorm.weight"), config.rms_norm_eps)
        for i, layer_type in enumerate(config.layer_types):
            if layer_type == LINEAR_ATTENTION:
                mixer_out = self._gated_deltanet(i, hidden, cache)
            else:
                mixer_out = self._gated_attention(i, hidden, cache, cos, sin)
            residual, hidden = ops.rmsnorm_add(
                mixer_out, residual, self._layer(i, "post_attention_layernorm.weight"), config.rms_norm_eps)
            moe_out = ops.moe(hidden.flatten(0, 1), self.moe_weights[i], config.num_experts_per_tok,
                              config.norm_topk_prob).view_as(hidden)
            is_last = i + 1 == config.num_hidden_layers
            next_norm = self.weights["model.norm.weight"] if is_last else self._layer(i + 1, "input_layernorm.weight")
            residual, hidden = ops.rmsnorm_add(moe_out, residual, next_norm, config.rms_norm_eps)
        cache.length += num_tokens
        if last_only:
            hidden = hidden[:, -1:]
        return F.linear(hidden, self.lm_head).float()

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding: prefill ``input_ids`` [B, T], then ``max_new_tokens`` steps (no stop token).

        Returns the new tokens [B, max_new_tokens].
        """
        cache = self.new_cache(input_ids.shape[0], input_ids.shape[1] + max_new_tokens)
        new_tokens = [self.forward(input_ids, cache, last_only=True).argmax(-1)]
        while len(new_tokens) < max_new_tokens:
            new_tokens.append(self.forward(new_tokens[-1], cache, last_only=True).argmax(-1))
        return torch.cat(new_tokens, dim=1)

    def _layer(self, i: int, name: str) -> torch.Tensor:
        return self.weights[f"model.layers.{i}.{name}"]

    def _gated_deltanet(self, i: int, x: torch.Tensor, cache: HybridCache) -> torch.Tensor:
        """Gated DeltaNet mixer of layer i. x: [B, T, H] -> [B, T, H]; updates cache.conv[i], cache.recurrent[i]."""
        config, ops = self.config, self.ops
        batch, num_tokens, _ = x.shape

        def weight(name):
            return self._layer(i, "linear_attn." + name)

        qkv, z = F.linear(x, weight("in_proj_qkvz.weight")).split(
            [config.linear_conv_dim, config.linear_value_dim], dim=-1)
        b, a = F.linear(x, weight("in_proj_ba.weight")).chunk(2, dim=-1)
        conv_weight = weight("conv1d.weight").squeeze(1)
        if num_tokens == 1:
            qkv = ops.causal_conv1d_update(qkv[:, 0], conv_weight, cache.conv[i]).unsqueeze(1)
        else:
            qkv, conv_state = ops.causal_conv1d(qkv, conv_weight, cache.conv[i])
            cache.conv[i].copy_(conv_state)
        q, k, v = qkv.split([config.linear_key_dim, config.linear_key_dim, config.linear_value_dim], dim=-1)
        q, k = (t.unflatten(-1, (config.linear_num_key_heads, config.linear_key_head_dim)) for t in (q, k))
        v, z = (t.unflatten(-1, (config.linear_num_value_heads, config.linear_value_head_dim)) for t in (v, z))

        g, beta = ops.gdn_gating(a, b, weight("A_log"), weight("dt_bias"))
        delta_rule = ops.gated_delta_rule_recurrent if num_tokens == 1 else ops.gated_delta_rule_chunked
        out, state = delta_rule(q, k, v, g, beta, initial_state=cache.recurrent[i])
        cache.recurrent[i].copy_(state)
        out = ops.rmsnorm_gated(out, z, weight("norm.weight"), config.rms_norm_eps)
        return F.linear(out.reshape(batch, num_tokens, -1), weight("out_proj.weight"))

    def _gated_attention(self, i: int, x: torch.Tensor, cache: HybridCache, cos: torch.Tensor,
                         sin: torch.Tensor) -> torch.Tensor:
        """Gated attention mixer of layer i. x: [B, T, H]; cos, sin: [T, rotary_dim] -> [B, T, H];
        writes the new keys and values at cache positions length .. length+T-1."""
        config, ops = self.config, self.ops
        batch, num_tokens, _ = x.shape
        head_dim, eps = config.head_dim, config.rms_norm_eps

        def weight(name):
            return self._layer(i, "self_attn." + name)

        q, gate = F.linear(x, weight("q_proj.weight")).unflatten(-1, (-1, 2 * head_dim)).chunk(2, dim=-1)
        k = F.linear(x, weight("k_proj.weight")).unflatten(-1, (-1, head_dim))
        v = F.linear(x, weight("v_proj.weight")).unflatten(-1, (-1, head_dim))
        q = ops.apply_partial_rope(ops.rmsnorm(q, weight("q_norm.weight"), eps), cos, sin)
        k = ops.apply_partial_rope(ops.rmsnorm(k, weight("k_norm.weight"), eps), cos, sin)

        end = cache.length + num_tokens
        cache.key[i][:, cache.length:end] = k
        cache.value[i][:, cache.length:end] = v
        out = ops.attention(q, cache.key[i][:, :end], cache.value[i][:, :end])
        out = out.reshape(batch, num_tokens, -1) * torch.sigmoid(gate.reshape(batch, num_tokens, -1))
        return F.linear(out, weight("o_proj.weight"))
