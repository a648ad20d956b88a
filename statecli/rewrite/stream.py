"""Moving tensor bytes: chunked reads from the input, cast on the way, values lost counted. numpy and
ml_dtypes do it (no torch import) wherever they read the tensor and cast its dtype exactly as torch
does; torch does the rest (other dtypes, DCP, sparse/quantized/nested tensors)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from ..io.values import ValueReader, dequantizable, numpy_readable, ordered_map
from ..state import TensorInfo
from ..units import itemsize
from . import cast as npcast
from .cast import Losses
from .pipe import LocalChunks

__all__ = ["CHUNK_BYTES", "Losses", "chunks", "count_losses", "count_view_losses"]

CHUNK_BYTES = 64 << 20  # bytes moved per step on torch's path: the working set beside the largest tensor
NP_CHUNK_BYTES = 16 << 20  # numpy's path keeps 2 x THREADS chunks in flight: ~64 MiB read ahead


def chunks(reader: Any, info: TensorInfo, cast_to: str | None, losses: Losses | None,
           whole_storage: bool, checksum: bool = False) -> Iterable[memoryview]:
    """The bytes of a storage (pt) or of one tensor made contiguous (safetensors), cast on the way,
    in chunks so memory stays bounded by a few chunks, not the checkpoint. With `checksum`, the
    result may offer crc32() (the CRC-32 of every byte yielded, computed off the caller's thread)."""
    if _numpy_path(reader, info, cast_to, whole_storage):
        src = _storage_info(info) if whole_storage else info
        if type(reader) is ValueReader and src.is_contiguous and src.source is not None and src.data_offset is not None:
            # A local file: pread into reused buffers, cast and checksum on workers (pipe.py).
            offset = src.data_offset + src.storage_offset * itemsize(src.dtype)
            count = losses is not None and cast_to is not None and npcast.lossy(src.dtype, cast_to)
            return LocalChunks(src.source, offset, src.numel, src.dtype, cast_to, losses if count else None, checksum)
        return _np_chunks(reader, info, cast_to, losses, whole_storage)
    return _torch_chunks(reader, info, cast_to, losses, whole_storage)


def _numpy_path(reader: Any, info: TensorInfo, cast_to: str | None, whole_storage: bool) -> bool:
    if info.quant is not None:  # dequantized: float32 rows from read_flat, chunk by chunk
        return (hasattr(reader, "read_flat") and dequantizable(info) and not whole_storage
                and cast_to is not None and npcast.supported("float32", cast_to))
    src = (info.storage_dtype or info.dtype) if whole_storage else info.dtype
    return (hasattr(reader, "read_flat") and numpy_readable(info)
            and (cast_to is None or npcast.supported(src, cast_to)))


def _storage_info(info: TensorInfo) -> TensorInfo:
    """The whole storage behind `info` as one flat contiguous tensor of the storage's dtype."""
    sdtype = info.storage_dtype or info.dtype
    nbytes = info.storage_size
    n = nbytes // itemsize(sdtype)
    return dataclasses.replace(info, dtype=sdtype, shape=(n,), stride=(1,), storage_offset=0, storage_dtype=sdtype,
                               storage_nbytes=nbytes)


def _np_chunks(reader: Any, info: TensorInfo, cast_to: str | None, losses: Losses | None,
               whole_storage: bool) -> Iterator[memoryview]:
    import numpy as np

    src = _storage_info(info) if whole_storage else info
    values = "float32" if info.quant is not None else src.dtype  # what read_flat returns
    count_here = losses is not None and cast_to is not None and npcast.lossy(values, cast_to)
    if src.is_contiguous:
        def read(lo: int, hi: int) -> Any:
            return reader.read_flat(src, lo, hi)
    else:  # a strided view made contiguous: bounded by this one tensor, as torch's .contiguous() was
        flat = np.ascontiguousarray(reader.array(src)).reshape(-1)

        def read(lo: int, hi: int) -> Any:
            return flat[lo:hi]

    def step(lo: int, hi: int) -> tuple[Any, Losses]:
        part = Losses()
        a = read(lo, hi)
        if cast_to is None:
            return a, part
        out = npcast.cast(a, cast_to)
        if count_here:
            npcast.count(part, a, out, cast_to)
        return out, part

    n = src.numel
    per = max(1, NP_CHUNK_BYTES // max(1, itemsize(values)))
    try:
        for out, part in ordered_map(step, n, per):
            if losses is not None:
                losses.overflow += part.overflow
                losses.underflow += part.underflow
            raw: Any = np.ascontiguousarray(out).reshape(-1).view(np.uint8)
            yield memoryview(raw)
    finally:
        reader.release(info)


def _torch_chunks(reader: Any, info: TensorInfo, cast_to: str | None, losses: Losses | None,
                  whole_storage: bool) -> Iterator[memoryview]:
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
    # Range, not bit width, decides whether a cast can lose values (see cast.lossy).
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
    """Torch's side of cast.count (DCP outputs and dtypes numpy lacks): the same rules. Counted on
    the chunk in float32 where torch lacks kernels (float8)."""
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
    seen: set[tuple[Any, ...]] = set()
    for t in views:
        ident = (t.storage_offset, t.shape, t.stride)
        if ident in seen or not t.numel:
            continue
        seen.add(ident)
        try:
            if hasattr(reader, "array") and numpy_readable(t) and npcast.supported(t.dtype, dtype):
                a = reader.array(t).reshape(-1)
                npcast.count(losses, a, npcast.cast(a, dtype), dtype)
                continue
            import torch

            target = getattr(torch, dtype)
            v = reader.tensor(t).reshape(-1)
            if v.dtype.is_floating_point:
                count_losses(losses, v, v.to(target), target)
        finally:
            reader.release(t)
