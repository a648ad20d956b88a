"""Reading tensor values lazily, one tensor at a time, from the memory-mapped file: as numpy arrays
(ml_dtypes for bfloat16 and float8; no torch import) or as torch tensors (imports torch)."""

from __future__ import annotations

import mmap
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..errors import BadInput
from ..state import Checkpoint, TensorInfo, contiguous_stride
from ..units import itemsize
from ..vocab import Layout

if TYPE_CHECKING:
    import numpy as np
    import torch

T = TypeVar("T")
# Decoders of quantized logical tensors (TensorInfo.quant), by QuantInfo.codec: rows r0..r1 of the
# tensor seen as 2-D [prod(shape[:-1]), shape[-1]] as float32. Filled by the formats that store
# quantized weights (formats/quant) when they are imported; io itself knows no scheme.
DEQUANTIZERS: dict[str, Callable[[ValueReader, TensorInfo, int, int], np.ndarray]] = {}
THREADS = min(2, os.cpu_count() or 1)  # chunk workers: numpy and pread release the GIL
_BUFFERS = threading.local()


@cache  # asked per tensor and per piece: np.dtype() of a name costs microseconds each time
def np_dtype(name: str) -> np.dtype[Any] | None:
    """numpy's dtype for a torch dtype name (ml_dtypes for bfloat16 and float8); None where numpy has
    none (complex32, float4, quantized, sub-byte ints): those values are read through torch."""
    import numpy as np

    if name in _NUMPY:
        return np.dtype(name)
    if name in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(cast(type, getattr(ml_dtypes, name)))
    return None


_NUMPY = {"float64", "float32", "float16", "complex128", "complex64", "int64", "int32", "int16", "int8",
          "uint64", "uint32", "uint16", "uint8", "bool"}
_ML_DTYPES = {"bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"}


def numpy_readable(info: TensorInfo) -> bool:
    """Whether `array()` reads this tensor without torch (a strided tensor in a file, numpy dtype)."""
    return (info.layout == Layout.STRIDED and info.device != "meta" and info.source is not None
            and info.data_offset is not None and np_dtype(info.dtype) is not None
            and np_dtype(info.storage_dtype or info.dtype) is not None
            and itemsize(info.dtype) == itemsize(info.storage_dtype or info.dtype))


def dequantizable(info: TensorInfo) -> bool:
    """Whether a quantized logical tensor's values can be read (a dequantizer is registered for it)."""
    return info.quant is not None and info.quant.codec in DEQUANTIZERS


def torch_to_numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a numpy array of the same dtype (bfloat16/float8 through a same-width int view)."""
    import torch

    dt = np_dtype(str(t.dtype).removeprefix("torch."))
    if dt is None:
        raise TypeError(f"numpy has no {t.dtype}")
    t = t.detach().contiguous()
    raw = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64, 16: torch.complex128}[t.element_size()]
    return t.view(raw).numpy().view(dt) if t.dtype != raw else t.numpy()


def ordered_map(fn: Callable[[int, int], T], total: int, step: int, threads: int = THREADS) -> Iterator[T]:
    """fn(lo, hi) over [0, total) in steps, on `threads` workers, results in order (see ordered_items)."""
    spans = [(lo, min(lo + step, total)) for lo in range(0, total, step)]
    return ordered_items(lambda span: fn(*span), spans, threads)


def ordered_items(fn: Callable[[Any], T], items: Sequence[Any], threads: int = THREADS) -> Iterator[T]:
    """fn(item) over the items on `threads` workers, results in order; at most 2 x threads items in
    flight so memory stays a few chunks. One worker (or one item) runs inline, no thread."""
    if threads <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending: list[Future[T]] = []
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * threads:
                break
        try:
            while pending:
                yield pending.pop(0).result()
                nxt = next(it, _END)
                if nxt is not _END:
                    pending.append(pool.submit(fn, nxt))
        finally:
            for f in pending:
                f.cancel()


_END = object()


def pread_array(fd: int, path: str, start: int, nbytes: int, dtype: str, slot: int | None = None) -> np.ndarray:
    """`nbytes` at `start` of an open file as a 1-D array of `dtype`, read with preadv (no GIL held)
    into a fresh buffer or this thread's buffer for `slot`."""
    import numpy as np

    buf = _buffer(slot, nbytes)  # `bytes(a) == bytes(b)` on these is a memcmp: see same_bytes()
    pread_into(fd, path, memoryview(buf), start)
    return np.frombuffer(buf, dtype=np_dtype(dtype))


def pread_into(fd: int, path: str, view: memoryview, start: int) -> None:
    """Fill `view` from byte `start` of an open file (preadv until full; a short file is BadInput)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], start + got)
        if n <= 0:
            raise BadInput(path, f"short read at byte {start + got}")
        got += n


def _buffer(slot: int | None, nbytes: int) -> bytearray:
    """A bytearray of exactly `nbytes`: this thread's one for `slot` when it has that size (chunks of a
    tensor all do), else a new one, kept for the slot when it is large."""
    cache: dict[int, bytearray] | None = getattr(_BUFFERS, "slots", None)
    if slot is None:
        return bytearray(nbytes)
    if cache is None:
        cache = _BUFFERS.slots = {}
    buf = cache.get(slot)
    if buf is None or len(buf) != nbytes:
        buf = bytearray(nbytes)
        if nbytes >= 1 << 20:
            cache[slot] = buf
    return buf


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two flat arrays hold the same bytes: a memcmp when both came from read_flat."""
    import numpy as np

    if a.nbytes != b.nbytes:
        return False
    ba, bb = _owner(a), _owner(b)
    if ba is not None and bb is not None:
        return ba == bb
    x, y = np.ascontiguousarray(a).reshape(-1).view(np.uint8), np.ascontiguousarray(b).reshape(-1).view(np.uint8)
    if not np.array_equal(x[:_HEAD], y[:_HEAD]):  # most differing pairs differ early: no full pass
        return False
    if x.size % 8 == 0:  # 8 bytes a comparison: as fast as a memcmp
        x, y = x.view(np.uint64), y.view(np.uint64)
    return bool(np.array_equal(x, y))


_HEAD = 1 << 16


def _owner(a: np.ndarray) -> bytearray | None:
    """The bytearray an array from read_flat spans exactly, or None."""
    base = a.base.obj if isinstance(a.base, memoryview) else a.base
    return base if isinstance(base, bytearray) and len(base) == a.nbytes else None


class ValueReader:
    """How every value pass (stats, show, check, diff, rewrites) reads tensor values; a FormatHandler's
    `values(ck)` hook returns one. This class reads values stored in place in local files: it maps each
    file once, `array()`/`tensor()` return views into the mapping (no copy) and `release()` drops the
    pages they touched, so RSS stays bounded by the tensors in flight.

    A reader for values that are not stored as they are (dequantized GGUF/GPTQ blocks, remote files)
    subclasses it and overrides what differs. The interface the passes use:
    - `reads_numpy(info)`: whether `read_flat`/`array` give this tensor's values as a numpy array (the
      passes summarise and compare those; the others go through `tensor()` or are skipped with a note);
    - `read_flat(info, lo, hi, slot)`: elements lo..hi in row-major order, a 1-D numpy array of the
      logical dtype (a dequantizing reader returns float32 here);
    - `array(info)`: the whole tensor, logical shape (numpy); `tensor(info)`: the same as torch (torch only);
    - `flat_span(info, lo, hi)`: (file, first byte, byte count) when elements lo..hi are plain bytes of
      a local file, which lets the passes batch them into block reads (io/blocks.py); return None
      (always, for a dequantizing or remote reader) and the passes call `read_flat` instead;
    - `fd(path)`: an open descriptor of a file `flat_span` named;
    - `release(info)` after a tensor is done, `close()` at the end."""

    def __init__(self, ck: Checkpoint) -> None:
        self.ck = ck
        self._maps: dict[str, mmap.mmap] = {}
        self._fds: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._open_lock = threading.Lock()
        self._last_assembled: tuple[TensorInfo, np.ndarray] | None = None

    def dequantizes(self, info: TensorInfo) -> bool:
        """Whether this reader gives `info`'s values dequantized (qtensor.dequantized_by asks it)."""
        return dequantizable(info)

    def array(self, info: TensorInfo) -> np.ndarray:
        """The tensor as a read-only numpy view into the mapping (its shape and strides; no copy)."""
        import numpy as np
        from numpy.lib.stride_tricks import as_strided

        if info.quant is not None:
            return self.dequantized(info, 0, info.numel).reshape(info.shape)
        if info.pieces and np_dtype(info.dtype) is not None:
            # Chunked readers (read_flat) ask for the same tensor once per chunk: assemble it once.
            last = self._last_assembled
            if last is None or last[0] is not info:
                last = self._last_assembled = (info, self._assembled(info, np.zeros(info.shape, np_dtype(info.dtype))))
            return last[1]
        if not numpy_readable(info):
            return torch_to_numpy(self.tensor(info))
        assert info.source is not None and info.data_offset is not None
        sdt, dt = np_dtype(info.storage_dtype or info.dtype), np_dtype(info.dtype)
        assert sdt is not None and dt is not None
        mm = self._map(info.source)
        nbytes = info.storage_size
        if info.data_offset + nbytes > len(mm):
            raise BadInput(info.source, f"storage at byte {info.data_offset} runs past the end of the file")
        flat = np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=info.data_offset).view(sdt).view(dt)
        if info.is_contiguous:
            return flat[info.storage_offset:info.storage_offset + info.numel].reshape(info.shape)
        stride = info.stride if info.stride is not None else contiguous_stride(info.shape)
        return as_strided(flat[info.storage_offset:], info.shape, [s * dt.itemsize for s in stride], writeable=False)

    def read_flat(self, info: TensorInfo, lo: int, hi: int, slot: int | None = None) -> np.ndarray:
        """Elements lo..hi of the tensor in row-major order, as a fresh 1-D array. A contiguous tensor in a
        file is read with pread (the GIL is released; no mapped pages stay resident), others are copied
        out of the mapping. With `slot`, the array lives in this thread's buffer for that slot, reused by
        its next read_flat of the same size (fresh zeroed pages cost as much as the read)."""
        import numpy as np

        if info.quant is not None:
            return self.dequantized(info, lo, hi)
        span = self.flat_span(info, lo, hi)
        if span is None:
            return np.ascontiguousarray(self.array(info).reshape(-1)[lo:hi])
        path, start, nbytes = span
        return pread_array(self._fd(path), path, start, nbytes, info.dtype, slot)

    def dequantized(self, info: TensorInfo, lo: int, hi: int) -> np.ndarray:
        """Elements lo..hi of a quantized logical tensor, dequantized to float32 (whole rows decoded)."""
        assert info.quant is not None
        fn = DEQUANTIZERS.get(info.quant.codec)
        if fn is None:
            raise BadInput(info.source, f"values of {info.quant.scheme} are not read by statecli")
        cols = info.shape[-1] if info.shape else 1
        if hi <= lo or cols == 0:
            import numpy as np

            return np.zeros(0, np.float32)
        r0, r1 = lo // cols, -(-hi // cols)
        return fn(self, info, r0, r1).reshape(-1)[lo - r0 * cols:hi - r0 * cols]

    def flat_span(self, info: TensorInfo, lo: int, hi: int) -> tuple[str, int, int] | None:
        """(file, first byte, byte count) of elements lo..hi of a contiguous tensor numpy reads straight
        from a local file, checked against the file's size; None where read_flat must copy instead."""
        dt = np_dtype(info.dtype)
        if dt is None or not numpy_readable(info) or not info.is_contiguous:
            return None
        assert info.source is not None and info.data_offset is not None
        size = dt.itemsize
        start = info.data_offset + (info.storage_offset + lo) * size
        end = info.data_offset + (info.storage_offset + hi) * size
        if end > self._size(info.source):
            raise BadInput(info.source, f"tensor data at byte {start} runs past the end of the file")
        return info.source, start, end - start

    def reads_numpy(self, info: TensorInfo) -> bool:
        """Whether `read_flat`/`array` give this tensor's values as a numpy array without torch (a
        quantized tensor: dequantized float32)."""
        return numpy_readable(info) or dequantizable(info)

    def fd(self, path: str) -> int:
        """An open descriptor of a local file `flat_span` named (opened once per reader)."""
        return self._fd(path)

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._open_lock:  # two workers' first reads of a file: one open, size known before the fd
                fd = self._fds.get(path)
                if fd is None:
                    fd = os.open(path, os.O_RDONLY)
                    self._sizes[path] = os.fstat(fd).st_size
                    self._fds[path] = fd
        return fd

    def _size(self, path: str) -> int:
        self._fd(path)
        return self._sizes[path]

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
        nbytes = info.storage_size
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

        if info.quant is not None:
            return torch.from_numpy(self.array(info).copy())
        if info.layout != Layout.STRIDED or info.device == "meta":
            raise BadInput(info.source, f"values of a {info.layout} {info.device} tensor are not read by statecli")
        if info.pieces:
            out: torch.Tensor = self._assembled(info, torch.zeros(info.shape, dtype=getattr(torch, info.dtype)))
            return out
        if info.source is None or info.data_offset is None:
            raise BadInput(info.source, "this tensor has no data in the file")
        dtype = getattr(torch, info.storage_dtype or info.dtype)
        want = getattr(torch, info.dtype)
        flat = self._flat(info)
        if want != dtype:
            flat = flat.view(want)
        stride = info.stride if info.stride is not None else contiguous_stride(info.shape)
        return flat.as_strided(info.shape, stride, info.storage_offset)

    def _assembled(self, info: TensorInfo, out: Any) -> Any:
        """A tensor saved in pieces (DCP chunks from several ranks), copied piece by piece into `out`
        (a zeroed numpy array or torch tensor of its shape): the pieces' coverage was checked on reading."""
        for piece in info.pieces:
            where = tuple(slice(o, o + n) for o, n in zip(piece.offsets, piece.info.shape))
            out[where] = self.array(piece.info) if not hasattr(out, "dim") else self.tensor(piece.info)
        return out

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
            try:
                mm.close()
            except BufferError:  # a numpy view still points into it: the mapping goes with the last view
                pass
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


REMOTE_READER: Callable[[Checkpoint], ValueReader] | None = None


@contextmanager
def value_reader(ck: Checkpoint) -> Iterator[ValueReader]:
    from .urls import is_remote

    # URLs: bounded ranged reads; io/remote_values.py sets REMOTE_READER when a URL is read.
    remote = REMOTE_READER is not None and any(is_remote(f) for f in ck.files)
    reader = REMOTE_READER(ck) if remote and REMOTE_READER is not None else ValueReader(ck)
    try:
        yield reader
    finally:
        reader.close()
