"""Comparison helpers and inputs shared by the tests."""

from __future__ import annotations

import torch


def calc_diff(out: torch.Tensor, ref: torch.Tensor) -> float:
    """1 - cosine similarity of the flattened tensors, in float64 (0 = same direction)."""
    out, ref = out.double().flatten(), ref.double().flatten()
    denom = (out * out).sum() * (ref * ref).sum()
    if denom == 0:
        return 0.0 if torch.equal(out, ref) else 1.0
    return float(1 - 2 * (out * ref).sum() / ((out * out).sum() + (ref * ref).sum()))


def assert_close(out: torch.Tensor, ref: torch.Tensor, *, atol: float = 0.0, rtol: float = 0.0,
                 max_rel_err: float | None = None, name: str = "output") -> None:
    """Elementwise |out - ref| <= atol + rtol * |ref|, and optionally ||out - ref|| / ||ref|| <= max_rel_err.

    NaN or inf anywhere in ``out`` fails. On failure the message names the worst element: its index,
    both values and the error, plus the relative norm error.
    """
    if out.shape != ref.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    o, r = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(o).all():
        bad = (~torch.isfinite(o)).nonzero()[0].tolist()
        count = int((~torch.isfinite(o)).sum())
        raise AssertionError(f"{name}: {count} non-finite elements, first at {bad}: {o[tuple(bad)].item()}")
    err = (o - r).abs()
    rel_norm = float((o - r).norm() / r.norm().clamp_min(1e-30))
    excess = err - (atol + rtol * r.abs())
    worst = int(excess.flatten().argmax()) if excess.numel() else 0
    if excess.numel() and excess.flatten()[worst] > 0:
        idx = list(torch.unravel_index(torch.tensor(worst), o.shape))
        idx = [int(i) for i in idx]
        raise AssertionError(
            f"{name}: {int((excess > 0).sum())}/{o.numel()} elements exceed atol={atol} rtol={rtol}; "
            f"worst at {idx}: got {o.flatten()[worst].item():.6g}, expected {r.flatten()[worst].item():.6g} "
            f"(abs err {err.flatten()[worst].item():.3g}); relative norm error {rel_norm:.3g}"
        )
    if max_rel_err is not None and rel_norm > max_rel_err:
        worst = int(err.flatten().argmax())
        idx = [int(i) for i in torch.unravel_index(torch.tensor(worst), o.shape)]
        raise AssertionError(
            f"{name}: relative norm error {rel_norm:.3g} > {max_rel_err}; worst element at {idx}: "
            f"got {o.flatten()[worst].item():.6g}, expected {r.flatten()[worst].item():.6g}"
        )


def nan_like(t: torch.Tensor) -> torch.Tensor:
    """An output buffer poisoned with NaN, so unwritten elements fail the comparison."""
    return torch.full_like(t, float("nan"))


def prompts(lengths, seed=0, vocab=151643):
    """Random token-id lists of the given lengths (ids below ``vocab``: by default the ordinary tokens)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]
