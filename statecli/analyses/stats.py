"""`inspect --stats`, `show` and `check --no-nan/--no-inf`: value statistics in one pass over the values.

Everything comes from ONE pass: moments, extremes and counts exactly (float64 sums, merged piece by piece
with Chan's formula); the |x| percentiles and the histogram from the finite values of every element
(tensors up to `sample` elements, `show`, `--exact`) or of a uniform random sample of `sample` positions
drawn with replacement (`sample_positions`: independent of the values and of the row length, so no
column aliasing). min/max/mean/std are torch's (NaN and Inf reach them); the finite-only figures are
separate fields. Tensors stored as plain bytes are read in blocks that span tensors (io/blocks.py) on
both cores; the kernels are numpy (no torch import; tests keep torch as the oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..state import Stats, TensorInfo
from ..units import COMPLEX
from ..vocab import Layout
from .compare import dot64 as _dot

if TYPE_CHECKING:
    from ..io.values import ValueReader

_SUB_BYTE = {f"{p}int{n}" for p in ("", "u") for n in range(1, 8)}
CHUNK = 1 << 22  # elements per reduction step of a tensor read one at a time
SAMPLE = 1 << 16  # `inspect --stats`: percentiles and histograms exact up to this many elements, sampled above
EXACT = 1 << 62  # a sample size no tensor reaches: every value
BINS = 16  # the inline histogram of `inspect --stats`
PERCENTILES = (0.5, 0.99)
_SEED = 27


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
        """The sample standard deviation (Bessel's correction), as torch.std: NaN for a single value."""
        return (self.m2 / (self.count - 1)) ** 0.5 if self.count > 1 else math.nan


@lru_cache(maxsize=16)
def sample_positions(n: int, sample: int) -> Any:
    """The sorted flat positions whose values `--stats` keeps for a tensor of n elements: None (every
    element) when n <= sample, else `sample` positions drawn uniformly with replacement by a seeded
    generator. The same for every tensor of n elements (cached), whatever the chunking."""
    import numpy as np

    if n <= sample:
        return None
    return np.sort(np.random.default_rng([_SEED, n]).integers(0, n, sample))


def picked(chunk: Any, start: int, positions: Any) -> Any:
    """The chunk's elements (it starts at flat index `start`) at the sample positions, or all of them."""
    import numpy as np

    if positions is None:
        return chunk
    i, j = np.searchsorted(positions, (start, start + chunk.size))
    return chunk[positions[i:j] - start]


def histogram(vals: Any, lo: float, hi: float, bins: int) -> list[int]:
    """Counts of `vals` (all within [lo, hi]) in `bins` equal bins, exactly as numpy.histogram bins them
    (its uniform-bin path, in float64: the last bin is closed; a constant tensor gets lo-0.5..hi+0.5),
    without its per-call overhead (a tenth of a millisecond, paid by every small tensor)."""
    import numpy as np

    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    if vals.size == 0:
        return [0] * bins
    a = vals.astype(np.float64, copy=False)
    idx = ((a - lo) / (hi - lo) * bins).astype(np.intp)
    idx[idx == bins] -= 1
    edges = np.linspace(lo, hi, bins + 1)
    idx[a < edges[idx]] -= 1  # numpy's corrections where the division rounded across an edge
    idx[(a >= edges[idx + 1]) & (idx != bins - 1)] += 1
    return [int(c) for c in np.bincount(idx, minlength=bins)]


def abs_percentiles(vals: Any, qs: tuple[float, ...] = PERCENTILES) -> list[float]:
    """Percentiles of |vals| with linear interpolation, computed exactly as torch.quantile does (rank
    q*(n-1) in float64, then torch's lerp), so the figures equal torch's to the last bit. float32 values
    stay float32 (|x| is exact in any float dtype): half the memory of --exact's whole-tensor copy."""
    import numpy as np

    if vals.size == 0:
        return []
    a = np.abs(vals.ravel() if vals.dtype in (np.float32, np.float64) else vals.astype(np.float64).ravel())
    ranks = [(q * (a.size - 1)) for q in qs]
    kth = sorted({k for r in ranks for k in (math.floor(r), math.ceil(r))})
    # numpy's SIMD sort beats its multi-kth partition by 5-50x up to millions of elements here (165 us vs
    # 8.5 ms for 65,536 float32); above that, partition's O(n) wins.
    if a.size <= 1 << 22:
        a.sort()
        part = a
    else:
        part = np.partition(a, kth)
    return [_lerp(float(part[math.floor(r)]), float(part[math.ceil(r)]), r - math.floor(r)) for r in ranks]


def _lerp(start: float, end: float, weight: float) -> float:
    """torch's vectorised lerp: fma(weight, end - start, start) below 0.5, else fma(weight - 1,
    end - start, end) — one rounding each, emulated exactly: the floats' exact integer ratios combined,
    then one correctly rounded int / int division."""
    if not (math.isfinite(start) and math.isfinite(end)):
        return start + weight * (end - start)
    diff = end - start
    w, base = (weight, start) if abs(weight) < 0.5 else (weight - 1, end)
    (a, b), (c, d), (e, f) = w.as_integer_ratio(), diff.as_integer_ratio(), base.as_integer_ratio()
    return (a * c * f + e * b * d) / (b * d * f)


def as_array(t: Any) -> Any:
    """A numpy array of the values (a torch tensor is converted without a copy where it can be)."""
    if type(t).__module__.startswith("torch"):
        from ..io.values import torch_to_numpy

        return torch_to_numpy(t)
    return t


@dataclass
class Part:
    """One piece's share of a tensor's statistics (merged in order)."""

    acc: Moments = field(default_factory=Moments)
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    zeros: int = 0
    kept: Any = None


def _widened(raw: Any) -> Any:
    """float32/float64 as they are; narrower floats to float32 (exact); integers and bool to float64."""
    import numpy as np

    if raw.dtype in (np.float32, np.float64):
        return raw
    if raw.dtype.kind == "V" or raw.dtype == np.float16:  # bfloat16/float8 (ml_dtypes) and float16
        return raw.astype(np.float32)
    return raw.astype(np.float64)


def chunk_part(raw: Any, start: int, positions: Any) -> Part:
    """Counts, moments and the kept values of one flat piece that starts at flat index `start`."""
    import numpy as np

    x = _widened(raw)
    if x.size == 0:
        return Part(kept=x)
    lo, hi = x.min(), x.max()
    part = Part(zeros=int(np.count_nonzero(x == 0)))
    keep = picked(x, start, positions)
    if np.isfinite(lo) and np.isfinite(hi):  # NaN and Inf reach min/max: no mask needed
        part.acc = _moments(x, float(lo), float(hi))
        part.kept = keep.copy() if keep.base is not None or keep is x else keep
        return part
    finite = np.isfinite(x)
    part.nan = int(np.count_nonzero(np.isnan(x)))
    part.posinf = int(np.count_nonzero(x == np.inf))
    part.neginf = int(np.count_nonzero(x == -np.inf))
    vals = x[finite]
    part.acc = _moments(vals, float(vals.min()), float(vals.max())) if vals.size else Moments()
    part.kept = keep[np.isfinite(keep)]
    return part


def _moments(vals: Any, lo: float, hi: float) -> Moments:
    """Moments of finite values: float64 sums whatever the dtype (float32 is widened inside numpy's loops)."""
    import numpy as np

    n = vals.size
    mean = float(np.add.reduce(vals, dtype=np.float64)) / n
    dev = np.subtract(vals, mean, dtype=np.float64)
    return Moments(n, mean, float(_dot(dev, dev)), lo, hi)


def stats_of_parts(parts: Iterable[Part], n: int, bins: int, exact: bool = True) -> Stats:
    """A tensor's Stats from its pieces' parts, in order; `exact`: the parts kept every value."""
    import numpy as np

    acc, nan, posinf, neginf, zeros, kept = Moments(), 0, 0, 0, 0, []
    for p in parts:
        acc.add(p.acc)
        nan, posinf, neginf, zeros = nan + p.nan, posinf + p.posinf, neginf + p.neginf, zeros + p.zeros
        kept.append(p.kept)
    shown = _torch_figures(acc, nan, posinf, neginf)
    if acc.count == 0:
        return Stats(*shown, nan, posinf + neginf, "no finite values", numel=n, zeros=zeros)
    values = np.concatenate(kept) if len(kept) > 1 else kept[0]
    # Every sampled element may be non-finite while others are not: no percentiles then.
    pcts: list[float | None] = [*abs_percentiles(values)] or [None, None]
    p50, p99 = pcts
    return Stats(*shown, nan, posinf + neginf, numel=n, zeros=zeros, p50_abs=p50, p99_abs=p99,
                 hist=tuple(histogram(values, acc.lo, acc.hi, bins)), sampled=values.size, finite=acc.count,
                 finite_min=acc.lo, finite_max=acc.hi, finite_mean=acc.mean, finite_std=acc.std, exact=exact)


def _torch_figures(acc: Moments, nan: int, posinf: int, neginf: int) -> tuple[float, float, float, float]:
    """min, max, mean and std as torch gives them for the whole tensor: a NaN makes all four NaN; an Inf
    is the min/max on its side, makes the mean Inf (NaN with both signs) and the std NaN."""
    if nan:
        return (math.nan,) * 4
    lo = -math.inf if neginf else acc.lo if acc.count else math.inf
    hi = math.inf if posinf else acc.hi if acc.count else -math.inf
    if posinf or neginf:
        return lo, hi, math.nan if posinf and neginf else math.inf if posinf else -math.inf, math.nan
    return lo, hi, acc.mean, acc.std


def read_stats(read: Callable[[int, int], Any], n: int, bins: int = BINS, sample: int = SAMPLE,
               threads: int | None = None) -> Stats:
    """Stats of n elements that `read(lo, hi)` returns flat, chunk by chunk on both cores."""
    from ..io.values import ordered_map

    positions = sample_positions(n, sample)

    def one(lo: int, hi: int) -> Part:
        return chunk_part(read(lo, hi), lo, positions)

    kw = {} if threads is None else {"threads": threads}
    return stats_of_parts(ordered_map(one, n, CHUNK, **kw), n, bins, positions is None)


def tensor_stats(t: Any, bins: int = BINS, sample: int = EXACT) -> Stats:
    """Moments, extremes, zero/NaN/Inf counts, |x| percentiles and a histogram of one array, in one pass."""
    arr = as_array(t)
    if arr.dtype.kind == "c":
        return Stats(None, None, None, None, 0, 0, "complex: not summarised")
    flat = arr.reshape(-1)
    if flat.size == 0:
        return Stats(None, None, None, None, 0, 0, "empty")
    return read_stats(lambda lo, hi: flat[lo:hi], flat.size, bins, sample, threads=1)


def full_histogram(t: Any, lo: float, hi: float, bins: int) -> list[int]:
    """Every finite value of `t` binned over [lo, hi] (a second pass)."""
    import numpy as np

    flat = as_array(t).reshape(-1)
    counts = [0] * bins
    for start in range(0, flat.size, CHUNK):
        chunk = _widened(flat[start:start + CHUNK])
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


def one_tensor(reader: ValueReader, t: TensorInfo, name: str, sample: int, bins: int) -> Stats:
    """Stats of a tensor `reader` does not give as plain bytes: read_flat chunk by chunk (numpy), or
    through torch into numpy (DCP pieces, torch-only dtypes)."""
    try:
        if reader.reads_numpy(t):
            return read_stats(lambda lo, hi: reader.read_flat(t, lo, hi), t.numel, bins, sample)
        return tensor_stats(reader.array(t), bins, sample)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise BadInput(t.source, f"cannot read values of {name!r}: {exc}") from exc
    finally:
        reader.release(t)


def stats_in_order(infos: Sequence[TensorInfo], parts: Iterable[list[tuple[int, Part | Stats]]], sample: int,
                   bins: int) -> dict[int, Stats]:
    """Per-tensor Stats from blocks' (tensor index, part) lists in file order: a tensor read in one piece
    arrives finished; a split one is done when the part holding its last element has arrived."""
    pending: dict[int, list[Part]] = {}
    got: dict[int, int] = {}
    out: dict[int, Stats] = {}
    for block in parts:
        for i, part in block:
            if isinstance(part, Stats):
                out[i] = part
                continue
            pending.setdefault(i, []).append(part)
            got[i] = got.get(i, 0) + part_size(part)
            if got[i] == infos[i].numel:
                n = infos[i].numel
                out[i] = stats_of_parts(pending.pop(i), n, bins, sample_positions(n, sample) is None)
    return out


def part_size(part: Part) -> int:
    """Elements a part covered (finite, NaN and Inf)."""
    return part.acc.count + part.nan + part.posinf + part.neginf
