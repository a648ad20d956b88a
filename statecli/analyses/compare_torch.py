"""The torch kernel of `diff`'s value comparison: for what numpy does not read bit for bit (complex, DCP
tensors, torch-only dtypes), and the oracle the numpy kernel (compare.py) is tested against."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..units import is_floating
from .changes import Sums, as_float64, pair_sums, square_sum

CHUNK = 1 << 22  # elements compared per step: bounds the float64 working set to ~100 MiB


class _Figures(Protocol):
    """The fields of diff's per-key work record this kernel fills."""

    compared_as: str | None
    max_abs: float | None
    max_rel: float | None
    mismatched: int | None
    sums: Sums | None
    note: str | None


def _work_dtype(common: Any, torch: Any) -> Any:
    """Compare in the common dtype, as torch.allclose does; narrow floats are widened to float32 so
    differences do not overflow, integers go to float64."""
    if common.is_complex:
        return torch.complex128
    if common in (torch.float32, torch.float64):
        return common
    return torch.float32 if common.is_floating_point else torch.int64


def _compare_pair(kd: _Figures, ta: Any, tb: Any, rtol: float, atol: float, equal_nan: bool, torch: Any,
                  done: Callable[[int, int], None] | None = None) -> None:
    """max |a-b|, max |a-b|/|b| and how many elements fail |a-b| <= atol + rtol*|b| (torch.allclose),
    chunk by chunk; `done(lo, hi)` is told when elements lo..hi are finished so their pages can go."""
    n = ta.numel()
    try:
        common = torch.promote_types(ta.dtype, tb.dtype)
    except RuntimeError:  # torch has no promotion for float8 types: compare in float32
        common = torch.float32
    if ta.dtype != tb.dtype:
        kd.compared_as = str(common).removeprefix("torch.")
    work = _work_dtype(common, torch)
    same_dtype = ta.dtype == tb.dtype and ta.dtype != torch.bool
    fa, fb = ta.reshape(-1), tb.reshape(-1)
    max_abs, max_rel, bad, nonfinite_bad = 0.0, 0.0, 0, 0
    sums = Sums()
    for start in range(0, n, CHUNK):
        ca, cb = fa[start:start + CHUNK], fb[start:start + CHUNK]
        # Identical bytes are equal whatever the tolerance (NaNs only with --equal-nan): memcmp speed.
        if same_dtype and ca.is_contiguous() and cb.is_contiguous() and torch.equal(
                ca.view(torch.uint8), cb.view(torch.uint8)) and (equal_nan or not _has_nan(ca, torch)):
            sq = square_sum(ca, torch) if work != torch.int64 else 0.0
            sums += Sums(sq, sq, sq, 0.0)
            if done:
                done(start, start + ca.numel())
            continue
        if work == torch.int64:  # integers: the difference exactly, then compared as floats
            ca, cb = ca.to(torch.int64), cb.to(torch.int64)
            d = (ca - cb).abs().to(torch.float64)
            babs = cb.abs().to(torch.float64)
        else:
            ca = ca.to(common).to(work) if ca.dtype != work else ca
            cb = cb.to(common).to(work) if cb.dtype != work else cb
            d = (ca - cb).abs()
            babs = cb.abs()
        close = d <= atol + rtol * babs
        finite = bool(torch.isfinite(ca).all()) and bool(torch.isfinite(cb).all())
        sums += pair_sums(as_float64(ca, torch), as_float64(cb, torch), finite, torch)
        if not finite:  # inf == inf of the same sign is close; NaN only with equal_nan
            close &= torch.isfinite(d)  # torch.isclose: a finite value is never close to an infinite one
            special = torch.isinf(ca) & (ca == cb)
            if equal_nan:
                special |= torch.isnan(ca) & torch.isnan(cb)
            close |= special
            d = torch.where(special, torch.zeros_like(d), d)
            dfin = torch.isfinite(d)
            nonfinite_bad += int(torch.count_nonzero(~dfin & ~close))
            d = torch.where(dfin, d, torch.zeros_like(d))
        bad += d.numel() - int(torch.count_nonzero(close))
        max_abs = max(max_abs, float(d.max()))
        rel = torch.where(babs > 0, d / babs, torch.zeros_like(d))
        max_rel = max(max_rel, float(torch.nan_to_num(rel, nan=0.0, posinf=0.0).max()))
        if done:
            done(start, start + ca.numel())
    kd.max_abs, kd.max_rel, kd.mismatched = max_abs, max_rel, bad
    # Norms of integer tensors (step counters, masks, ids) would swamp a module's weights: floats only.
    kd.sums = sums if work != torch.int64 else None
    if nonfinite_bad:
        kd.note = f"{nonfinite_bad} element(s) differ by NaN or Inf (not counted in max_abs)"


def _has_nan(t: Any, torch: Any) -> bool:
    if not is_floating(str(t.dtype).removeprefix("torch.")):
        return False
    return bool(torch.isnan(t.to(torch.float32) if t.dtype.itemsize == 1 else t).any())
