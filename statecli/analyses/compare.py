"""The numpy kernel of `diff`'s value comparison: torch.allclose's figures for one chunk pair, bit for bit
the torch kernel's (tests/unit/analyses/test_perf_compare.py keeps torch as the oracle), without torch.

Reading: each worker maps its chunk of A and B (compare_pool.run_task), compares the bytes, and only
when they differ runs the arithmetic below in cache-sized blocks. Float work (every float dtype but
float64) takes `_fast_f32`: about ten passes in float32 into per-thread scratch buffers, no temporaries,
sums from float32 rows; a block holding NaN/Inf falls back to the general `_block` for exactly the
figures torch gives there."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .changes import ROW, Sums

BLOCK = 1 << 17  # elements per arithmetic step: few enough numpy calls per MiB that two threads rarely wait on the GIL
SUM_ROW = 1024  # float32 elements dotted per row before the rows are summed in float64 (relative error ~1e-9)
_SCRATCH = threading.local()

_FLOAT8 = {"float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"}
_WIDE_UNSIGNED = {"uint16", "uint32", "uint64"}
_FLOATS = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}
_INTS = {"uint8": 8, "int8": 8, "int16": 16, "int32": 32, "int64": 64}


def promote(a: str, b: str) -> str:
    """torch.promote_types for the dtypes statecli reads, by name; where torch has no promotion (float8
    with anything else; uint16/32/64 with another integer, bool or complex) statecli compares in float32.

    | A \\ B      | bool | int   | float       | complex          |
    |------------|------|-------|-------------|------------------|
    | bool       | bool | int   | float       | complex          |
    | int        |      | wider int; uint8+int8 -> int16 | float | complex |
    | float      |      |       | wider; float16+bfloat16 -> float32 | complex64, complex128 with float64 |
    | float8     | float32 unless A == B                                          |
    | uint16..64 | float32 unless A == B or B is float16/bfloat16/float32/float64 (-> B) |"""
    if a == b:
        return a
    if a in _FLOAT8 or b in _FLOAT8:
        return "float32"
    for x, y in ((a, b), (b, a)):
        if x in _WIDE_UNSIGNED:
            return y if y in _FLOATS else "float32"
    if "bool" in (a, b):
        return b if a == "bool" else a
    if a.startswith("complex") or b.startswith("complex"):
        wide = "complex128" in (a, b) or "float64" in (a, b)
        return "complex128" if wide else "complex64"
    if a in _FLOATS and b in _FLOATS:
        if _FLOATS[a] == _FLOATS[b]:
            return "float32"  # float16 with bfloat16
        return a if _FLOATS[a] > _FLOATS[b] else b
    if a in _FLOATS or b in _FLOATS:
        return a if a in _FLOATS else b
    if {a, b} == {"uint8", "int8"}:
        return "int16"
    return a if _INTS[a] > _INTS[b] else b


def work_dtype(common: str) -> str:
    """Compare in the common dtype, as torch.allclose does; narrow floats are widened to float32 so
    differences do not overflow, integers (and bool) go to int64 and are compared exactly."""
    if common.startswith("complex"):
        return "complex128"
    if common in ("float32", "float64"):
        return common
    return "float32" if common in _FLOATS or common in _FLOAT8 else "int64"


@dataclass
class Partial:
    """One chunk's share of a key's figures; merged in chunk order so the result does not depend on
    which worker finished first."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    bad: int = 0
    nonfinite_bad: int = 0
    sums: Sums = Sums()

    def merge(self, o: Partial) -> None:
        self.max_abs = max(self.max_abs, o.max_abs)
        self.max_rel = max(self.max_rel, o.max_rel)
        self.bad += o.bad
        self.nonfinite_bad += o.nonfinite_bad
        self.sums += o.sums


def is_float_name(dtype: str) -> bool:
    return dtype in _FLOATS or dtype in _FLOAT8


def has_nan(c: Any, dtype: str) -> bool:
    import numpy as np

    if not is_float_name(dtype):
        return False
    return bool(np.isnan(c.astype(np.float32) if c.dtype.itemsize == 1 else c).any())


def as_float64(c: Any) -> Any:
    """A chunk as flat float64 (complex as its real and imaginary parts: the sums then give |a|^2 and
    Re(conj(a)*b)), as changes.as_float64 does for torch."""
    import numpy as np

    if c.dtype.kind == "c":
        return c.astype(np.complex128).view(np.float64)
    return c.astype(np.float64)


def square_sum(c: Any) -> float:
    """sum(c^2) over the finite elements, as changes.square_sum: float32 rows of ROW elements dotted in
    float32, row sums added in float64; a non-finite result falls back to the masked float64 sum."""
    import numpy as np

    if c.dtype == np.float32:
        k = c.size // ROW * ROW
        rows = c[:k].reshape(-1, ROW)
        tail = c[k:].astype(np.float64)
        s = float(np.einsum("ij,ij->i", rows, rows).sum(dtype=np.float64)) + float(dot64(tail, tail))
        if s == s and s != float("inf"):
            return s
    a = as_float64(c)
    if not np.isfinite(a).all():
        a = a[np.isfinite(a)]
    return float(dot64(a, a))


def compare_chunk(ca: Any, cb: Any, da: str, db: str, rtol: float, atol: float, equal_nan: bool,
                  same_bytes: bool | None = None) -> Partial:
    """The figures of one flat chunk pair (numpy arrays of dtypes `da`, `db`). `same_bytes`: the caller
    already compared the bytes (None: compare here when the dtypes are the same)."""
    import numpy as np

    from ..io.values import np_dtype
    from ..io.values import same_bytes as raw_equal

    common = promote(da, db)
    work = work_dtype(common)
    if da == db and da != "bool":
        if same_bytes is None:
            same_bytes = raw_equal(ca, cb)
        # Identical bytes are equal whatever the tolerance (NaNs only with --equal-nan).
        if same_bytes and (equal_nan or not has_nan(ca, da)):
            sq = square_sum(ca) if work != "int64" else 0.0
            return Partial(sums=Sums(sq, sq, sq, 0.0))
    out = Partial()
    wdt, cdt = np_dtype(work), np_dtype(common)
    with np.errstate(all="ignore"):
        for lo in range(0, ca.size, BLOCK):
            xa, xb = ca[lo:lo + BLOCK], cb[lo:lo + BLOCK]
            if work != "float32" or not _fast_f32(out, xa, xb, cdt, rtol, atol):
                _block(out, xa, xb, wdt, cdt, work, rtol, atol, equal_nan)
    return out


def _scratch(n: int) -> tuple[Any, ...]:
    """This thread's float32 buffers (A, B, |a-b|, |b|, a temporary) and a bool mask, at least n long:
    allocated once per worker, so no block pays for fresh pages."""
    import numpy as np

    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None or bufs[0].size < n:
        bufs = tuple(np.empty(max(n, BLOCK), np.float32) for _ in range(5)) + (np.empty(max(n, BLOCK), np.bool_),)
        _SCRATCH.bufs = bufs
    return tuple(b[:n] for b in bufs)


def _fast_f32(out: Partial, ca: Any, cb: Any, cdt: Any, rtol: float, atol: float) -> bool:
    """A block compared in float32 when every value is finite: the same operations
    as `_block` (so the same bits for the count and the maxima), in place. False: nothing was added,
    the caller runs `_block`."""
    import numpy as np

    fa, fb, d, babs, tmp, mask = _scratch(ca.size)
    a, b = _as_f32(ca, cdt, fa), _as_f32(cb, cdt, fb)
    np.subtract(a, b, out=d)
    np.abs(d, out=d)
    np.abs(b, out=babs)
    max_abs = d.max()
    if not np.isfinite(max_abs):  # NaN or Inf in a or b (or a-b overflowing) all reach |a-b|
        return False
    np.divide(d, babs, out=tmp)
    top = tmp.max()
    if not np.isfinite(top):  # some |b| == 0 (or the quotient overflowed): as torch.where + nan_to_num
        np.copyto(tmp, np.float32(0), where=~(babs > 0))
        top = np.nan_to_num(tmp, copy=False, nan=0.0, posinf=0.0).max()
    # torch.isclose: |a-b| <= atol + rtol*|b|, the tolerances taken to float32 first (NEP 50 weak scalars).
    np.multiply(babs, np.float32(rtol), out=tmp)
    np.add(tmp, np.float32(atol), out=tmp)
    out.bad += d.size - int(np.count_nonzero(np.less_equal(d, tmp, out=mask)))
    out.max_abs = max(out.max_abs, float(max_abs))
    out.max_rel = max(out.max_rel, float(top))
    out.sums += Sums(_rowdot(a, a), _rowdot(b, b), _rowdot(a, b), _rowdot(d, d))
    return True


def _as_f32(c: Any, cdt: Any, buf: Any) -> Any:
    """A block as float32: itself, or converted into `buf` through the common dtype (as _block does)."""
    import numpy as np

    if c.dtype == np.float32:
        return c
    np.copyto(buf, c if c.dtype == cdt or cdt == np.float32 else c.astype(cdt), casting="unsafe")
    return buf


def _rowdot(x: Any, y: Any) -> float:
    """sum(x*y) of two float32 vectors: SUM_ROW-element rows dotted in float32, the rows summed in float64."""
    import numpy as np

    k = x.size // SUM_ROW * SUM_ROW
    # vecdot's float32 dot loop: faster than einsum's and as exact (its own SIMD loop, not OpenBLAS's threads)
    rows_x, rows_y = x[:k].reshape(-1, SUM_ROW), y[:k].reshape(-1, SUM_ROW)
    vecdot = getattr(np, "vecdot", None)  # numpy >= 2.0
    rows = vecdot(rows_x, rows_y) if vecdot is not None else np.einsum("ij,ij->i", rows_x, rows_y)
    s = float(rows.sum(dtype=np.float64))
    return s + dot64(x[k:].astype(np.float64), y[k:].astype(np.float64)) if k < x.size else s


def _block(out: Partial, ca: Any, cb: Any, wdt: Any, cdt: Any, work: str, rtol: float, atol: float,
           equal_nan: bool) -> None:
    import numpy as np

    if work == "int64":  # integers: the difference exactly, then compared as floats
        a, b = ca.astype(np.int64), cb.astype(np.int64)
        d = np.abs(a - b).astype(np.float64)
        babs = np.abs(b).astype(np.float64)
        finite = True
    else:
        a = ca if ca.dtype == wdt else ca.astype(cdt).astype(wdt)
        b = cb if cb.dtype == wdt else cb.astype(cdt).astype(wdt)
        d = np.abs(a - b)
        babs = np.abs(b)
        # Both finite exactly when max |a-b| and max |b| are (NaN and Inf propagate); else check each.
        finite = bool(np.isfinite(d.max()) and np.isfinite(babs.max())) or bool(
            np.isfinite(a).all() and np.isfinite(b).all())
    close = d <= atol + rtol * babs
    fa, fb = as_float64(a), as_float64(b)
    if not finite:
        keep = np.isfinite(fa) & np.isfinite(fb)
        fa, fb = fa[keep], fb[keep]
        close &= np.isfinite(d)  # torch.isclose: a finite value is never close to an infinite one
        special = np.isinf(a) & (a == b)  # inf == inf of the same sign is close; NaN only with equal_nan
        if equal_nan:
            special |= np.isnan(a) & np.isnan(b)
        close |= special
        d = np.where(special, np.zeros_like(d), d)
        dfin = np.isfinite(d)
        out.nonfinite_bad += int(np.count_nonzero(~dfin & ~close))
        d = np.where(dfin, d, np.zeros_like(d))
    diff = fb - fa
    out.sums += Sums(float(dot64(fa, fa)), float(dot64(fb, fb)), float(dot64(fa, fb)), float(dot64(diff, diff)))
    out.bad += d.size - int(np.count_nonzero(close))
    out.max_abs = max(out.max_abs, float(d.max()))
    rel = d / babs
    top = rel.max()
    if not np.isfinite(top):  # some |b| == 0 (or the quotient overflowed): as torch.where + nan_to_num
        rel = np.where(babs > 0, rel, np.zeros_like(rel))
        top = np.nan_to_num(rel, nan=0.0, posinf=0.0).max()
    out.max_rel = max(out.max_rel, float(top))


def dot64(a: Any, b: Any) -> float:
    """sum(a*b) in float64 without BLAS: numpy's own SIMD loop. np.dot goes to OpenBLAS, whose threads
    fight ours (and everyone's on a busy machine): 100x slower on 32K elements here."""
    import numpy as np

    return float(np.einsum("i,i->", a, b))
