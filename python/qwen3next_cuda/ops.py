"""The one place that picks a CUDA kernel or the PyTorch reference for each op.

Every public function here has the signature and semantics of its namesake in
``qwen3next_cuda.reference``: model code calls ``ops.<name>`` and never branches on the device.
A kernel runs when the extension is built and the inputs are CUDA tensors of a supported dtype;
otherwise (CPU tensors, or no extension) the reference runs. Ops without a kernel yet are the
reference functions themselves.
"""

from __future__ import annotations

import json

import torch

from . import reference
from .reference import (  # noqa: F401  (ops without a kernel yet run the reference)
    apply_partial_rope,
    attention,
    causal_conv1d,
    causal_conv1d_update,
    gated_delta_rule_chunked,
    gated_delta_rule_recurrent,
    gdn_gating,
    moe,
    rope_cos_sin,
    router_topk,
)

try:
    from . import _C  # noqa: F401  (registers torch.ops.qwen3next.*)

    HAS_KERNELS = True
except ImportError:
    HAS_KERNELS = False

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _use_kernel(*tensors: torch.Tensor) -> bool:
    return HAS_KERNELS and all(t.is_cuda and t.dtype in _KERNEL_DTYPES for t in tensors)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """The kernels read rows of contiguous elements (strided rows are fine): copy other layouts once."""
    return t if t.stride(-1) == 1 or t.size(-1) <= 1 else t.contiguous()


def build_info() -> dict | None:
    """Architectures and CUDA/CUTLASS versions of the built extension, or None if it is not built."""
    return json.loads(torch.ops.qwen3next.build_info()) if HAS_KERNELS else None


# ---- norms ------------------------------------------------------------------------------------


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if not _use_kernel(x, weight):
        return reference.rmsnorm(x, weight, eps)
    out = x.new_empty(x.shape)
    torch.ops.qwen3next.rmsnorm(out, _rows(x), weight, eps)
    return out


def rmsnorm_add(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not _use_kernel(x, residual, weight):
        return reference.rmsnorm_add(x, residual, weight, eps)
    new_residual, out = x.new_empty(x.shape), x.new_empty(x.shape)
    torch.ops.qwen3next.rmsnorm_add(new_residual, out, _rows(x), _rows(residual), weight, eps)
    return new_residual, out


def rmsnorm_gated(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if not _use_kernel(x, z, weight):
        return reference.rmsnorm_gated(x, z, weight, eps)
    out = x.new_empty(x.shape)
    torch.ops.qwen3next.rmsnorm_gated(out, _rows(x), _rows(z), weight, eps)
    return out


# ---- fake (meta) implementations: the ops only write their preallocated outputs ------------------

if HAS_KERNELS:

    @torch.library.register_fake("qwen3next::rmsnorm")
    def _(out, x, weight, eps):
        return None

    @torch.library.register_fake("qwen3next::rmsnorm_add")
    def _(residual_out, out, x, residual, weight, eps):
        return None

    @torch.library.register_fake("qwen3next::rmsnorm_gated")
    def _(out, x, z, weight, eps):
        return None
