"""`inspect --stats` and `check --no-nan/--no-inf`: value statistics, one tensor at a time."""

from __future__ import annotations

from typing import Any

from ..errors import BadInput
from ..formats.values import value_reader
from ..state import Checkpoint, Entry, Stats
from ..units import COMPLEX

_SUB_BYTE = {f"{p}int{n}" for p in ("", "u") for n in range(1, 8)}
CHUNK = 1 << 22  # elements per reduction step: bounds the float64 working copy to 32 MiB


def tensor_stats(t: Any) -> Stats:
    """min/max/mean/std over finite values plus NaN/Inf counts, in float64, chunk by chunk."""
    import torch

    if t.dtype.is_complex:
        return Stats(None, None, None, None, 0, 0, "complex: not summarised")
    flat = t.reshape(-1)
    n = flat.numel()
    if n == 0:
        return Stats(None, None, None, None, 0, 0, "empty")
    total, sq, count, nan, inf = 0.0, 0.0, 0, 0, 0
    lo, hi = float("inf"), float("-inf")
    for start in range(0, n, CHUNK):
        chunk = flat[start:start + CHUNK].to(torch.float64)
        finite = torch.isfinite(chunk)
        nan += int(torch.isnan(chunk).sum())
        inf += int(torch.isinf(chunk).sum())
        vals = chunk[finite] if not bool(finite.all()) else chunk
        if vals.numel():
            count += vals.numel()
            total += float(vals.sum())
            sq += float((vals * vals).sum())
            lo = min(lo, float(vals.min()))
            hi = max(hi, float(vals.max()))
    if count == 0:
        return Stats(None, None, None, None, nan, inf, "no finite values")
    mean = total / count
    var = max(sq / count - mean * mean, 0.0) * (count / (count - 1) if count > 1 else 0.0)
    return Stats(lo, hi, mean, var ** 0.5, nan, inf)


def stats_for(ck: Checkpoint, entries: list[Entry]) -> dict[str, Stats]:
    """Statistics for every tensor entry, reading one tensor at a time."""
    out: dict[str, Stats] = {}
    with value_reader(ck) as reader:
        for e in entries:
            t = e.tensor
            if t is None:
                continue
            if t.layout != "strided" or t.device == "meta" or t.dtype in COMPLEX:
                what = t.layout if t.layout != "strided" else t.device if t.device == "meta" else t.dtype
                out[e.name] = Stats(None, None, None, None, 0, 0, f"{what}: not summarised")
                continue
            if t.dtype.startswith(("q", "float4", "bits")) or t.dtype in _SUB_BYTE:
                out[e.name] = Stats(None, None, None, None, 0, 0, f"{t.dtype}: not summarised")
                continue
            try:
                out[e.name] = tensor_stats(reader.tensor(t))
            except (ValueError, RuntimeError, TypeError) as exc:
                raise BadInput(t.source or ck.path, f"cannot read values of {e.name!r}: {exc}") from exc
            finally:
                reader.release(t)
    return out
