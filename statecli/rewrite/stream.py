"""Moving tensor bytes: chunked reads from the mapped input, cast on the way, values lost counted."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..state import TensorInfo

CHUNK_BYTES = 64 << 20  # bytes moved per step: the engine's working set beside the largest tensor


@dataclass
class Losses:
    """Running counts for one cast while its chunks stream by (mutable on purpose: a write-time tally)."""

    overflow: int = 0
    underflow: int = 0


def chunks(reader: Any, info: TensorInfo, cast_to: str | None, losses: Losses | None,
           whole_storage: bool) -> Iterator[memoryview]:
    """The bytes of a storage (pt) or of one tensor made contiguous (safetensors), cast on the way,
    in chunks of CHUNK_BYTES so memory stays bounded by the chunk, not the checkpoint."""
    import torch

    src = reader.storage(info) if whole_storage else reader.tensor(info)
    mapped = info.data_offset is not None and (whole_storage or src.is_contiguous())
    base = 0
    if mapped:
        assert info.data_offset is not None
        base = info.data_offset + (0 if whole_storage else info.storage_offset * src.element_size())
    if not whole_storage and not src.is_contiguous():
        src = src.contiguous()  # bounded by this one tensor
    flat = src.reshape(-1)
    step = max(1, CHUNK_BYTES // max(1, flat.element_size()))
    target = getattr(torch, cast_to) if cast_to else None
    # Range, not bit width, decides whether a cast can lose values: bfloat16 -> float16 is 16 -> 16
    # bits but overflows above 65504 and underflows below 6e-8.
    lossy = target is not None and target.is_floating_point and src.dtype.is_floating_point and (
        torch.finfo(target).max < torch.finfo(src.dtype).max or torch.finfo(target).tiny > torch.finfo(src.dtype).tiny)
    try:
        for start in range(0, flat.numel(), step):
            chunk = flat[start:start + step]
            if target is not None:
                out = chunk.to(target)
                if losses is not None and lossy and chunk.numel():
                    count_losses(losses, chunk, out, target)
                chunk = out
            yield memoryview(chunk.contiguous().view(torch.uint8).numpy()) if chunk.numel() else memoryview(b"")
            if mapped:  # this chunk is written: its input pages can go, so RSS stays at one chunk
                esize = flat.element_size()
                reader.release_bytes(info, base + start * esize, base + (start + step) * esize)
    finally:
        reader.release(info)


def count_losses(losses: Losses, chunk: Any, out: Any, target: Any) -> None:
    """Overflow: finite values that became inf (or NaN: float8 e4m3 has no inf); underflow: non-zero
    values that became zero. Counted on the chunk in float32 where torch lacks kernels (float8)."""
    import torch

    if target.itemsize == 1:
        out = out.to(torch.float32)
    if chunk.dtype.itemsize == 1:
        chunk = chunk.to(torch.float32)
    lo, hi = torch.aminmax(chunk)  # one pass, no |x| temporary; NaN anywhere makes both NaN
    top = torch.finfo(target).max
    span = max(-float(lo), float(hi))
    if span > top or span != span:
        if "fn" in str(target):  # float8 "fn" types have no inf: out-of-range values saturate or turn NaN
            losses.overflow += int(torch.count_nonzero((chunk.abs() > top) & torch.isfinite(chunk)))
        else:
            losses.overflow += int(torch.count_nonzero(torch.isinf(out))) - int(torch.count_nonzero(torch.isinf(chunk)))
    losses.underflow += int(torch.count_nonzero(chunk)) - int(torch.count_nonzero(out))


def count_view_losses(losses: Losses, views: Iterable[TensorInfo], reader: Any, dtype: str) -> None:
    """Losses counted on the tensors themselves, once per distinct view: for a storage no view covers
    (a slice of a bigger tensor), elements nothing refers to must not count."""
    import torch

    target = getattr(torch, dtype)
    seen: set[tuple[Any, ...]] = set()
    for t in views:
        ident = (t.storage_offset, t.shape, t.stride)
        if ident in seen or not t.numel:
            continue
        seen.add(ident)
        try:
            v = reader.tensor(t).reshape(-1)
            if v.dtype.is_floating_point:
                count_losses(losses, v, v.to(target), target)
        finally:
            reader.release(t)
