"""`inspect --stats`, `show` and `check --no-nan/--no-inf`: value statistics, one tensor at a time.

Everything comes from ONE pass over a tensor's chunks: moments, extremes and counts exactly (float64,
merged chunk by chunk with Chan's formula); the |x| percentiles and the histogram from the finite
values of an evenly spaced sample of at most SAMPLE elements taken from the chunks as they pass,
so they are exact for tensors up to SAMPLE elements and estimates above. Each reduction is a small
function of (values, parameters). The kernels are numpy (no torch import); chunks of a tensor in a
file are read with pread and reduced on both cores, merged in order (tests keep torch as the oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..errors import BadInput
from ..io.values import dequantizable, numpy_readable, ordered_map, value_reader
from ..state import Checkpoint, Entry, Stats
from ..units import COMPLEX
from ..vocab import Layout
from .compare import dot64 as _dot

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

    n = vals.size
    if n == 0:
        return Moments()
    mean = float(vals.mean())
    dev = vals - mean
    return Moments(n, mean, float(_dot(dev, dev)), float(vals.min()), float(vals.max()))


def sample_of(chunk: Any, start: int, step: int) -> Any:
    """The elements of `chunk` (which starts at flat index `start`) whose index is a multiple of
    `step`: the same sample whatever the chunk size."""
    return chunk[(-start) % step::step]


def histogram(vals: Any, lo: float, hi: float, bins: int) -> list[int]:
    """Counts of `vals` (float64, all within [lo, hi]) in `bins` equal bins: numpy.histogram (the last
    bin is closed; a constant tensor gets the range lo-0.5..hi+0.5)."""
    import numpy as np

    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    if vals.size == 0:
        return [0] * bins
    return [int(c) for c in np.histogram(vals, bins=bins, range=(lo, hi))[0]]


def abs_percentiles(vals: Any, qs: tuple[float, ...] = PERCENTILES) -> list[float]:
    """Percentiles of |vals| with linear interpolation, computed exactly as torch.quantile does (rank
    q*(n-1) in float64, then torch's lerp), so the figures equal torch's to the last bit."""
    import numpy as np

    if vals.size == 0:
        return []
    a = np.abs(np.asarray(vals, dtype=np.float64).ravel())
    out = []
    for q in qs:
        rank = q * (a.size - 1)
        lo, hi = math.floor(rank), math.ceil(rank)
        part = np.partition(a, (lo, hi)) if a.size > 1 else a
        v0, v1, w = float(part[lo]), float(part[hi]), rank - lo
        out.append(_lerp(v0, v1, w))
    return out


def _lerp(start: float, end: float, weight: float) -> float:
    """torch's vectorised lerp: fma(weight, end - start, start) below 0.5, else fma(weight - 1,
    end - start, end) — one rounding each, emulated exactly with fractions (two values per tensor)."""
    from fractions import Fraction

    if not (math.isfinite(start) and math.isfinite(end)):
        return start + weight * (end - start)
    diff = end - start
    if abs(weight) < 0.5:
        return float(Fraction(weight) * Fraction(diff) + Fraction(start))
    return float(Fraction(weight - 1) * Fraction(diff) + Fraction(end))


def as_array(t: Any) -> Any:
    """A numpy array of the values (a torch tensor is converted without a copy where it can be)."""
    if type(t).__module__.startswith("torch"):
        from ..io.values import torch_to_numpy

        return torch_to_numpy(t)
    return t


@dataclass
class Part:
    """One chunk's share of a tensor's statistics (merged in chunk order)."""

    acc: Moments = field(default_factory=Moments)
    nan: int = 0
    inf: int = 0
    zeros: int = 0
    kept: Any = None


def _float64(raw: Any) -> Any:
    import numpy as np

    return (raw.astype(np.float32) if raw.dtype.itemsize == 1 and raw.dtype.kind == "V" else raw).astype(np.float64)


def chunk_part(raw: Any, start: int, step: int) -> Part:
    """Counts, moments and the sample of one flat chunk (any numpy dtype statecli summarises)."""
    import numpy as np

    chunk = _float64(raw)
    lo, hi = (chunk.min(), chunk.max()) if chunk.size else (0.0, 0.0)
    part = Part(zeros=chunk.size - int(np.count_nonzero(chunk)))
    picked = sample_of(chunk, start, step)
    if np.isfinite(lo) and np.isfinite(hi):  # NaN and Inf reach min/max: no mask needed
        part.acc = _moments(chunk, float(lo), float(hi))
        part.kept = picked.copy()
        return part
    finite = np.isfinite(chunk)
    part.nan = int(np.count_nonzero(np.isnan(chunk)))
    part.inf = int(np.count_nonzero(np.isinf(chunk)))
    part.acc = chunk_moments(chunk[finite])
    part.kept = picked[np.isfinite(picked)]
    return part


def _moments(vals: Any, lo: float, hi: float) -> Moments:

    mean = float(vals.mean())
    dev = vals - mean
    return Moments(vals.size, mean, float(_dot(dev, dev)), lo, hi)


def stats_of_parts(parts: Any, n: int, bins: int) -> Stats:
    """A tensor's Stats from its chunks' parts, in order."""
    import numpy as np

    acc, nan, inf, zeros, kept = Moments(), 0, 0, 0, []
    for p in parts:
        acc.add(p.acc)
        nan, inf, zeros = nan + p.nan, inf + p.inf, zeros + p.zeros
        kept.append(p.kept)
    if acc.count == 0:
        return Stats(None, None, None, None, nan, inf, "no finite values", numel=n, zeros=zeros)
    values = np.concatenate(kept)
    # Every sampled element may be non-finite while others are not: no percentiles then (torch's kernel raised).
    pcts: list[float | None] = [*abs_percentiles(values)] or [None, None]
    p50, p99 = pcts
    return Stats(acc.lo, acc.hi, acc.mean, acc.std, nan, inf, numel=n, zeros=zeros, p50_abs=p50, p99_abs=p99,
                 hist=tuple(histogram(values, acc.lo, acc.hi, bins)), sampled=values.size, finite=acc.count)


def read_stats(read: Callable[[int, int], Any], n: int, bins: int = BINS, sample: int = SAMPLE,
               threads: int | None = None) -> Stats:
    """Stats of n elements that `read(lo, hi)` returns flat, chunk by chunk on both cores."""
    step = max(1, -(-n // sample))

    def one(lo: int, hi: int) -> Part:
        return chunk_part(read(lo, hi), lo, step)

    kw = {} if threads is None else {"threads": threads}
    return stats_of_parts(ordered_map(one, n, CHUNK, **kw), n, bins)


def tensor_stats(t: Any, bins: int = BINS, sample: int = SAMPLE) -> Stats:
    """Moments, extremes, zero/NaN/Inf counts, |x| percentiles and a histogram, in one pass."""
    arr = as_array(t)
    if arr.dtype.kind == "c":
        return Stats(None, None, None, None, 0, 0, "complex: not summarised")
    flat = arr.reshape(-1)
    if flat.size == 0:
        return Stats(None, None, None, None, 0, 0, "empty")
    return read_stats(lambda lo, hi: flat[lo:hi], flat.size, bins, sample, threads=1)


def full_histogram(t: Any, lo: float, hi: float, bins: int) -> list[int]:
    """Every finite value of `t` binned over [lo, hi] (a second pass; `show` pays it for one tensor)."""
    import numpy as np

    flat = as_array(t).reshape(-1)
    counts = [0] * bins
    for start in range(0, flat.size, CHUNK):
        chunk = _float64(flat[start:start + CHUNK])
        chunk = chunk[np.isfinite(chunk)]
        counts = [a + b for a, b in zip(counts, histogram(chunk, lo, hi, bins))]
    return counts


def not_summarised(dtype: str, layout: str, device: str) -> str | None:
    """Why a tensor's values are not summarised, or None when they are."""
    if layout != Layout.STRIDED or device == "meta" or dtype in COMPLEX:
        return f"{layout if layout != Layout.STRIDED else device if device == 'meta' else dtype}: not summarised"
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
            why = None if dequantizable(t) else not_summarised(t.dtype, t.layout, t.device)
            if why:
                out[e.name] = Stats(None, None, None, None, 0, 0, why)
                continue
            try:
                if t.numel == 0:
                    out[e.name] = Stats(None, None, None, None, 0, 0, "empty")
                elif numpy_readable(t) or dequantizable(t):  # quantized: dequantized rows, chunk by chunk
                    out[e.name] = read_stats(partial(reader.read_flat, t), t.numel)
                else:  # DCP: torch reads the tensor, numpy reduces it
                    out[e.name] = tensor_stats(reader.array(t))
            except (ValueError, RuntimeError, TypeError) as exc:
                raise BadInput(t.source or ck.path, f"cannot read values of {e.name!r}: {exc}") from exc
            finally:
                reader.release(t)
    return out
