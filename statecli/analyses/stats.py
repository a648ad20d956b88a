"""`inspect --stats`, `show` and `check --no-nan/--no-inf`: value statistics, one tensor at a time.

Everything comes from ONE pass over a tensor's chunks: moments, extremes and counts exactly (float64,
merged chunk by chunk with Chan's formula); the |x| percentiles and the histogram from the finite
values of an evenly spaced sample of at most SAMPLE elements taken from the chunks as they pass,
so they are exact for tensors up to SAMPLE elements and estimates above. Each reduction is a small
function of (values, parameters) so a faster backend can replace it one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BadInput
from ..formats.values import value_reader
from ..state import Checkpoint, Entry, Stats
from ..units import COMPLEX

_SUB_BYTE = {f"{p}int{n}" for p in ("", "u") for n in range(1, 8)}
CHUNK = 1 << 22  # elements per reduction step: bounds the float64 working copy to 32 MiB
SAMPLE = 1 << 18  # elements kept for percentiles and histograms: exact below, evenly spaced above
BINS = 16  # the inline histogram of `inspect --stats`
PERCENTILES = (0.5, 0.99)


@dataclass
class Moments:
    """Running count, mean, sum of squared deviations (M2), min and max of finite values."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = float("inf")
    hi: float = float("-inf")

    def add(self, other: Moments) -> None:
        """Chan et al.'s parallel update: no cancellation from sum(x^2) - n*mean^2."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2, self.lo, self.hi = other.count, other.mean, other.m2, other.lo, other.hi
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * other.count / n
        self.m2 += other.m2 + delta * delta * self.count * other.count / n
        self.count = n
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)

    @property
    def std(self) -> float:
        return (self.m2 / (self.count - 1)) ** 0.5 if self.count > 1 else 0.0


def chunk_moments(vals: Any) -> Moments:
    """Moments of a float64 chunk of finite values."""
    n = vals.numel()
    if n == 0:
        return Moments()
    mean = float(vals.mean())
    dev = vals - mean
    return Moments(n, mean, float((dev * dev).sum()), float(vals.min()), float(vals.max()))


def sample_of(chunk: Any, start: int, step: int) -> Any:
    """The elements of `chunk` (which starts at flat index `start`) whose index is a multiple of
    `step`: the same sample whatever the chunk size."""
    return chunk[(-start) % step::step]


def histogram(vals: Any, lo: float, hi: float, bins: int) -> list[int]:
    """Counts of `vals` (float64, all within [lo, hi]) in `bins` equal bins: numpy.histogram's edges
    and edge rules exactly (the last bin is closed; a constant tensor gets the range lo-0.5..hi+0.5)."""
    import torch

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
    import torch

    if vals.numel() == 0:
        return []
    return [float(x) for x in torch.quantile(vals.abs(), torch.tensor(qs, dtype=torch.float64))]


def tensor_stats(t: Any, bins: int = BINS, sample: int = SAMPLE) -> Stats:
    """Moments, extremes, zero/NaN/Inf counts, |x| percentiles and a histogram, in one pass."""
    import torch

    if t.dtype.is_complex:
        return Stats(None, None, None, None, 0, 0, "complex: not summarised")
    flat = t.reshape(-1)
    n = flat.numel()
    if n == 0:
        return Stats(None, None, None, None, 0, 0, "empty")
    step = max(1, -(-n // sample))
    acc, nan, inf, zeros = Moments(), 0, 0, 0
    kept = []
    for start in range(0, n, CHUNK):
        chunk = flat[start:start + CHUNK].to(torch.float64)
        finite = torch.isfinite(chunk)
        all_finite = bool(finite.all())
        if not all_finite:
            nan += int(torch.isnan(chunk).sum())
            inf += int(torch.isinf(chunk).sum())
        zeros += int((chunk == 0).sum())
        acc.add(chunk_moments(chunk if all_finite else chunk[finite]))
        picked = sample_of(chunk, start, step)
        kept.append(picked if all_finite else picked[torch.isfinite(picked)])
    if acc.count == 0:
        return Stats(None, None, None, None, nan, inf, "no finite values", numel=n, zeros=zeros)
    values = torch.cat(kept)
    p50, p99 = abs_percentiles(values)
    return Stats(acc.lo, acc.hi, acc.mean, acc.std, nan, inf, numel=n, zeros=zeros, p50_abs=p50, p99_abs=p99,
                 hist=tuple(histogram(values, acc.lo, acc.hi, bins)), sampled=values.numel(), finite=acc.count)


def full_histogram(t: Any, lo: float, hi: float, bins: int) -> list[int]:
    """Every finite value of `t` binned over [lo, hi] (a second pass; `show` pays it for one tensor)."""
    import torch

    flat = t.reshape(-1)
    counts = [0] * bins
    for start in range(0, flat.numel(), CHUNK):
        chunk = flat[start:start + CHUNK].to(torch.float64)
        chunk = chunk[torch.isfinite(chunk)]
        counts = [a + b for a, b in zip(counts, histogram(chunk, lo, hi, bins))]
    return counts


def not_summarised(dtype: str, layout: str, device: str) -> str | None:
    """Why a tensor's values are not summarised, or None when they are."""
    if layout != "strided" or device == "meta" or dtype in COMPLEX:
        return f"{layout if layout != 'strided' else device if device == 'meta' else dtype}: not summarised"
    if dtype.startswith(("q", "float4", "bits")) or dtype in _SUB_BYTE:
        return f"{dtype}: not summarised"
    return None


def stats_for(ck: Checkpoint, entries: list[Entry]) -> dict[str, Stats]:
    """Statistics for every tensor entry, reading one tensor at a time."""
    out: dict[str, Stats] = {}
    with value_reader(ck) as reader:
        for e in entries:
            t = e.tensor
            if t is None:
                continue
            why = not_summarised(t.dtype, t.layout, t.device)
            if why:
                out[e.name] = Stats(None, None, None, None, 0, 0, why)
                continue
            try:
                out[e.name] = tensor_stats(reader.tensor(t))
            except (ValueError, RuntimeError, TypeError) as exc:
                raise BadInput(t.source or ck.path, f"cannot read values of {e.name!r}: {exc}") from exc
            finally:
                reader.release(t)
    return out
