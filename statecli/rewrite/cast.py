"""Float casts with numpy and ml_dtypes, value for value as torch's `.to(dtype)` rounds them, and the
values a cast loses counted as torch-based code counts them; no torch import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..io.values import np_dtype

if TYPE_CHECKING:
    import numpy as np

# (largest finite, smallest normal) of each float dtype statecli casts between: torch.finfo's max/tiny.
RANGE = {"float64": (1.7976931348623157e308, 2.2250738585072014e-308),
         "float32": (3.4028234663852886e38, 1.1754943508222875e-38),
         "float16": (65504.0, 6.103515625e-05),
         "bfloat16": (3.3895313892515355e38, 1.1754943508222875e-38),
         "float8_e4m3fn": (448.0, 0.015625),
         "float8_e5m2": (57344.0, 6.103515625e-05)}
_WIDE = ("float32", "float64")


@dataclass
class Losses:
    """Running counts for one cast while its chunks stream by (mutable on purpose: a write-time tally)."""

    overflow: int = 0
    underflow: int = 0


def supported(src: str, dst: str) -> bool:
    """Whether `cast` converts src -> dst exactly as torch does (otherwise torch does the cast)."""
    return src in RANGE and dst in RANGE


def lossy(src: str, dst: str) -> bool:
    """Range, not bit width, decides whether a cast can lose values: bfloat16 -> float16 is 16 -> 16
    bits but overflows above 65504 and underflows below 6e-8."""
    return src in RANGE and dst in RANGE and (RANGE[dst][0] < RANGE[src][0] or RANGE[dst][1] > RANGE[src][1])


def cast(a: np.ndarray, dst: str) -> np.ndarray:
    """`a` (a float dtype of RANGE) as `dst`, rounded to nearest even with torch's special cases:
    float64 goes through float32 first to anything narrower (torch's kernels convert from float, so
    they round twice), and float8_e4m3fn saturates out-of-range values, infinities included, to
    +-448 where ml_dtypes would give NaN. NaN stays NaN (torch's NaN payload bits depend on whether
    its vector or scalar loop handled the element, so no one pattern matches them)."""
    import numpy as np

    to = np_dtype(dst)
    assert to is not None
    return cast_into(a, dst, np.empty(a.shape, dtype=to))


def cast_into(a: np.ndarray, dst: str, out: np.ndarray) -> np.ndarray:
    """cast(a, dst) written into `out` (same shape, dst's dtype): no temporary for float32 sources,
    so a stream converts into buffers it reuses. float32 -> float8 goes through a table (_F8_TABLE)."""
    import numpy as np

    if a.dtype == np.float64 and dst not in _WIDE or a.dtype.itemsize == 1:
        a = a.astype(np.float32)  # float8 sources widen exactly; torch converts them through float
    if a.dtype == np.float32 and dst in _F8_FROM_F32:
        _f8_from_f32(a.reshape(-1), dst, out.reshape(-1).view(np.uint8))
        return out
    if a.dtype == out.dtype:
        np.copyto(out, a)
        return out
    _astype_into(a, dst, out)
    return out


def _astype_into(a: np.ndarray, dst: str, out: np.ndarray) -> None:
    """numpy/ml_dtypes' own conversion (what astype does) with torch's float8_e4m3fn saturation."""
    import numpy as np

    with np.errstate(all="ignore"):
        np.copyto(out, a, casting="unsafe")
    if dst == "float8_e4m3fn":
        raw = out.view(np.uint8)
        became_nan = (raw & 0x7F) == 0x7F
        if became_nan.any():
            became_nan &= ~np.isnan(a)
            raw[became_nan & (np.signbit(a))] = 0xFE
            raw[became_nan & ~np.signbit(a)] = 0x7E


# float32 -> float8 by table: ml_dtypes converts at ~0.5 GB/s here, a lookup at ~5 GB/s. The top 16
# bits of a float32 (sign, exponent, 7 mantissa bits) index the table, with bit 16 ORed with "any
# of the low 16 bits set" (a sticky bit): a float8 rounding boundary is a multiple of 2**19 in bit
# space (round bits are mantissa bits >= 19 for every normal and subnormal float8 value), so the
# index always falls in the same rounding interval as the value, never on a tie the value is not on.
# Each entry is _astype_into's own result for that index, so the table is exact by construction;
# tests/unit/rewrite/test_cast_table.py checks it against torch and the direct conversion.
_F8_FROM_F32 = ("float8_e4m3fn", "float8_e5m2")
_F8_TABLE: dict[str, np.ndarray] = {}
_BLOCK = 1 << 16  # elements per step: the index temporary stays in L2


def _table(dst: str) -> np.ndarray:
    import numpy as np

    table = _F8_TABLE.get(dst)
    if table is None:
        to = np_dtype(dst)
        assert to is not None
        keys = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
        out = np.empty(keys.shape, dtype=to)
        _astype_into(keys, dst, out)
        table = _F8_TABLE.setdefault(dst, out.view(np.uint8))
    return table


def _f8_from_f32(a: np.ndarray, dst: str, out: np.ndarray) -> None:
    import numpy as np

    table = _table(dst)
    bits = a.view(np.uint32)
    tmp = np.empty(min(_BLOCK, bits.size), dtype=np.uint32)
    for lo in range(0, bits.size, _BLOCK):
        u = bits[lo:lo + _BLOCK]
        t = tmp[:u.size]
        np.bitwise_and(u, 0xFFFF, out=t)
        np.add(t, 0xFFFF, out=t)  # bit 16 set iff any low bit is: the sticky bit
        np.bitwise_or(t, u, out=t)
        np.right_shift(t, 16, out=t)
        np.take(table, t, out=out[lo:lo + u.size])


def count(losses: Losses, src: np.ndarray, out: np.ndarray, dst: str) -> None:
    """Overflow: finite values that became inf (float8 "fn" types have no inf: finite values beyond
    the largest one, which saturate); underflow: non-zero values that became zero. The same rules and
    arithmetic as the torch-side count (stream.count_losses), so the numbers agree."""
    import numpy as np

    if not src.size:
        return
    underflow = _nonzero(src) - _nonzero(out)
    native = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
    if src.dtype not in native:
        src = src.astype(np.float32)  # bfloat16 and float8 reduce in float32: an exact widening
    top = RANGE[dst][0]
    with np.errstate(all="ignore"):
        lo, hi = float(src.min()), float(src.max())  # NaN anywhere makes both NaN
        span = max(-lo, hi)
        if span > top or span != span:
            if "fn" in dst:
                losses.overflow += int(np.count_nonzero((np.abs(src) > top) & np.isfinite(src)))
            else:
                if out.dtype not in native:
                    out = out.astype(np.float32)
                losses.overflow += int(np.count_nonzero(np.isinf(out))) - int(np.count_nonzero(np.isinf(src)))
    losses.underflow += underflow


def _nonzero(a: np.ndarray) -> int:
    """count_nonzero of a float array on its bits, sign masked off (-0 is zero, NaN is not): numpy's
    own count_nonzero is 30x slower on float16 and has no loop for ml_dtypes types."""
    import numpy as np

    size = a.dtype.itemsize
    bits = np.ascontiguousarray(a).view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[size])
    return int(np.count_nonzero(bits & np.array((1 << (8 * size - 1)) - 1, dtype=bits.dtype)))
