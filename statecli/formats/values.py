"""Reading tensor values lazily, one tensor at a time, from the memory-mapped file (imports torch)."""

from __future__ import annotations

import mmap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import BadInput
from ..state import Checkpoint, TensorInfo, contiguous_stride
from ..units import itemsize

if TYPE_CHECKING:
    import torch



class ValueReader:
    """Maps each file once; `tensor()` returns a view into the mapping (no copy) and `release()`
    drops the pages it touched so RSS stays bounded by the tensors in flight."""

    def __init__(self, ck: Checkpoint) -> None:
        self.ck = ck
        self._maps: dict[str, mmap.mmap] = {}

    def _map(self, path: str) -> mmap.mmap:
        mm = self._maps.get(path)
        if mm is None:
            with open(path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[path] = mm
        return mm

    def storage(self, info: TensorInfo) -> torch.Tensor:
        """The whole storage behind `info`, flat, in the storage's dtype (views keep their offsets)."""
        if info.source is None or info.data_offset is None:
            return self.tensor(info).contiguous().reshape(-1)
        return self._flat(info)

    def _flat(self, info: TensorInfo) -> torch.Tensor:
        import torch

        assert info.source is not None and info.data_offset is not None
        dtype = getattr(torch, info.storage_dtype or info.dtype)
        mm = self._map(info.source)
        nbytes = info.storage_nbytes if info.storage_nbytes is not None else info.nbytes
        count = nbytes // itemsize(info.storage_dtype or info.dtype)
        if info.data_offset + nbytes > len(mm):
            raise BadInput(info.source, f"storage at byte {info.data_offset} runs past the end of the file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # frombuffer warns that the mapping is read-only
            if count:
                return torch.frombuffer(mm, dtype=dtype, count=count, offset=info.data_offset)
            return torch.empty(0, dtype=dtype)

    def tensor(self, info: TensorInfo) -> torch.Tensor:
        import torch

        if info.layout != "strided" or info.device == "meta":
            raise BadInput(info.source, f"values of a {info.layout} {info.device} tensor are not read by statecli")
        if info.source is None or info.data_offset is None:
            return self._dcp_tensor(info)
        dtype = getattr(torch, info.storage_dtype or info.dtype)
        want = getattr(torch, info.dtype)
        flat = self._flat(info)
        if want != dtype:
            flat = flat.view(want)
        stride = info.stride if info.stride is not None else contiguous_stride(info.shape)
        return flat.as_strided(info.shape, stride, info.storage_offset)

    def _dcp_tensor(self, info: TensorInfo) -> torch.Tensor:
        import torch
        import torch.distributed.checkpoint as dcp

        name = info.storage_key or ""
        target = {name: torch.empty(info.shape, dtype=getattr(torch, info.dtype))}
        # The .metadata pickle already passed statecli's no-execution reader (see formats/dcp.py).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.load(target, checkpoint_id=self.ck.path, no_dist=True) if _accepts_no_dist() else dcp.load(
                target, checkpoint_id=self.ck.path)
        return target[name]

    def release(self, info: TensorInfo) -> None:
        mm = self._maps.get(info.source or "")
        if mm is None or info.data_offset is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = info.data_offset // page * page
        end = info.data_offset + (info.storage_nbytes or info.nbytes)
        if end > start:
            mm.madvise(mmap.MADV_DONTNEED, start, min(end, len(mm)) - start)

    def release_elements(self, info: TensorInfo, lo: int, hi: int) -> None:
        """Drop the pages of elements lo..hi of a contiguous tensor, once they have been used."""
        mm = self._maps.get(info.source or "")
        if mm is None or info.data_offset is None or not info.is_contiguous or not hasattr(mmap, "MADV_DONTNEED"):
            return
        size = itemsize(info.dtype)
        self.release_bytes(info, info.data_offset + (info.storage_offset + lo) * size,
                           info.data_offset + (info.storage_offset + hi) * size)

    def release_bytes(self, info: TensorInfo, first: int, last: int) -> None:
        """MADV_DONTNEED over [first, last) of the file behind `info` (page-aligned down)."""
        mm = self._maps.get(info.source or "")
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = first // mmap.PAGESIZE * mmap.PAGESIZE
        last = min(last, len(mm))
        if last > start:
            mm.madvise(mmap.MADV_DONTNEED, start, last - start)

    def close(self) -> None:
        for mm in self._maps.values():
            mm.close()
        self._maps.clear()


def _accepts_no_dist() -> bool:
    import inspect

    import torch.distributed.checkpoint as dcp

    return "no_dist" in inspect.signature(dcp.load).parameters


@contextmanager
def value_reader(ck: Checkpoint) -> Iterator[ValueReader]:
    reader = ValueReader(ck)
    try:
        yield reader
    finally:
        reader.close()
