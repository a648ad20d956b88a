"""The torch implementations statecli's numpy value kernels replaced, kept as the oracle for the tests."""

from __future__ import annotations

from typing import Any

import torch

from statecli.analyses.stats import BINS, CHUNK, PERCENTILES, SAMPLE, Moments, sample_positions
from statecli.state import Stats


def chunk_moments(vals: Any) -> Moments:
    """Moments of a float64 chunk of finite values."""
    n = vals.numel()
    if n == 0:
        return Moments()
    mean = float(vals.mean())
    dev = vals - mean
    return Moments(n, mean, float((dev * dev).sum()), float(vals.min()), float(vals.max()))


def histogram(vals: Any, lo: float, hi: float, bins: int) -> list[int]:
    """Counts of `vals` (float64, all within [lo, hi]) in `bins` equal bins: numpy.histogram's edges
    and edge rules exactly (the last bin is closed; a constant tensor gets the range lo-0.5..hi+0.5)."""

    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    if vals.numel() == 0:
        return [0] * bins
    edges = torch.arange(bins + 1, dtype=torch.float64) * ((hi - lo) / bins) + lo
    edges[-1] = hi
    idx = ((vals - lo) / (hi - lo) * bins).to(torch.int64).clamp_(0, bins - 1)
    idx -= (vals < edges[idx]).to(torch.int64)
    idx += ((vals >= edges[idx + 1]) & (idx != bins - 1)).to(torch.int64)
    return [int(c) for c in torch.bincount(idx, minlength=bins)]


def abs_percentiles(vals: Any, qs: tuple[float, ...] = PERCENTILES) -> list[float]:
    """Percentiles of |vals| with linear interpolation (numpy.percentile's default)."""

    if vals.numel() == 0:
        return []
    return [float(x) for x in torch.quantile(vals.abs(), torch.tensor(qs, dtype=torch.float64))]


def tensor_stats(t: Any, bins: int = BINS, sample: int = SAMPLE) -> Stats:
    """min/max/mean/std from torch's own reductions over the whole tensor (in float64); the finite-only
    moments, counts, |x| percentiles and histogram from the finite values at statecli's sample positions
    (the sampling design is statecli's; the values there and every figure are computed by torch)."""

    if t.dtype.is_complex:
        return Stats(None, None, None, None, 0, 0, "complex: not summarised")
    flat = t.reshape(-1)
    n = flat.numel()
    if n == 0:
        return Stats(None, None, None, None, 0, 0, "empty")
    whole = flat.to(torch.float64)
    shown = (float(whole.min()), float(whole.max()), float(whole.mean()), float(whole.std()) if n > 1 else float("nan"))
    nan, inf, zeros = int(torch.isnan(whole).sum()), int(torch.isinf(whole).sum()), int((whole == 0).sum())
    acc = Moments()
    for start in range(0, n, CHUNK):
        chunk = whole[start:start + CHUNK]
        acc.add(chunk_moments(chunk[torch.isfinite(chunk)]))
    if acc.count == 0:
        return Stats(*shown, nan, inf, "no finite values", numel=n, zeros=zeros)
    positions = sample_positions(n, sample)
    picked = whole if positions is None else whole[torch.from_numpy(positions)]
    values = picked[torch.isfinite(picked)]
    p50, p99 = abs_percentiles(values)
    return Stats(*shown, nan, inf, numel=n, zeros=zeros, p50_abs=p50, p99_abs=p99,
                 hist=tuple(histogram(values, acc.lo, acc.hi, bins)), sampled=values.numel(), finite=acc.count,
                 finite_min=acc.lo, finite_max=acc.hi, finite_mean=acc.mean, finite_std=acc.std,
                 exact=positions is None)


def full_histogram(t: Any, lo: float, hi: float, bins: int) -> list[int]:
    """Every finite value of `t` binned over [lo, hi] (a second pass; `show` pays it for one tensor)."""

    flat = t.reshape(-1)
    counts = [0] * bins
    for start in range(0, flat.numel(), CHUNK):
        chunk = flat[start:start + CHUNK].to(torch.float64)
        chunk = chunk[torch.isfinite(chunk)]
        counts = [a + b for a, b in zip(counts, histogram(chunk, lo, hi, bins))]
    return counts


def extremes(t: Any, k: int, chunk: int = 1 << 22) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """The k smallest and k largest finite values with their flat indices, chunk by chunk."""

    flat = t.reshape(-1)
    small: list[tuple[int, float]] = []
    large: list[tuple[int, float]] = []
    for start in range(0, flat.numel(), chunk):
        c = flat[start:start + chunk].to(torch.float64)
        finite = torch.isfinite(c)
        for into, fill, largest in ((large, float("-inf"), True), (small, float("inf"), False)):
            vals = torch.where(finite, c, torch.full_like(c, fill))
            top = torch.topk(vals, min(k, vals.numel()), largest=largest)
            into += [(start + int(i), float(v)) for v, i in zip(top.values, top.indices) if v == v and abs(v) != float("inf")]
    small = sorted(small, key=lambda x: (x[1], x[0]))[:k]
    large = sorted(large, key=lambda x: (-x[1], x[0]))[:k]
    return small, large


def first_values(t: Any, n: int) -> tuple[Any, ...]:
    """The first n values in row-major order, as Python numbers (narrow floats widened to float)."""

    head = t.reshape(-1)[:n]
    if head.dtype.is_floating_point and head.dtype.itemsize < 4:
        head = head.to(torch.float32)
    return tuple(head.tolist())
