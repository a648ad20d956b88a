"""Tensor values of remote checkpoints: bounded, concurrent ranged reads. Chunks read for a diff go
straight into the array; whole tensors (torch paths, rewrites) are spooled to a temporary file and
mapped, so memory stays a few chunks and disk one or two tensors, whatever the checkpoint's size."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..state import Checkpoint, TensorInfo
from ..vocab import Layout
from . import values, zipheaders
from .source import MAX_RANGE, RemoteSource
from .urls import is_remote
from .values import ValueReader, np_dtype, numpy_readable

if TYPE_CHECKING:
    import numpy as np
    import torch

CHUNK = 8 << 20  # bytes per range request (under source.MAX_RANGE)
THREADS = 8  # range requests in flight per read: latency, not bandwidth, bounds a remote read
AHEAD = 4  # chunks of a diff read ahead per side (4 x NP_CHUNK bytes of memory)
SPOOLED = 2  # whole storages kept on disk at once (a diff holds one tensor per side)


def fetch(src: RemoteSource, offset: int, n: int, sink: Callable[[int, bytes], None], threads: int = THREADS) -> None:
    """Bytes [offset, offset + n) of `src` handed to sink(relative offset, bytes) chunk by chunk, at
    most `2 x threads` chunks in flight (memory stays bounded however large `n` is)."""
    step = min(CHUNK, MAX_RANGE)
    spans = [(lo, min(step, n - lo)) for lo in range(0, n, step)]
    if len(spans) <= 1 or threads <= 1:
        for lo, size in spans:
            sink(lo, src.pread(offset + lo, size))
        return
    with ThreadPoolExecutor(min(threads, len(spans))) as pool:
        pending: list[tuple[int, Future[bytes]]] = []
        it = iter(spans)
        try:
            for lo, size in it:
                pending.append((lo, pool.submit(src.pread, offset + lo, size)))
                while len(pending) >= 2 * threads:
                    first, fut = pending.pop(0)
                    sink(first, fut.result())
            for first, fut in pending:
                sink(first, fut.result())
        finally:
            for _, fut in pending:
                fut.cancel()


class RemoteValueReader(ValueReader):
    """ValueReader for checkpoints whose files are URLs (values.value_reader picks it)."""

    def __init__(self, ck: Checkpoint) -> None:
        super().__init__(ck)
        self._sources: dict[str, RemoteSource] = {}
        self._spools: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._dir: str | None = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[tuple[str, int, int], Future[bytearray]] = {}
        self._taken: set[tuple[str, int, int]] = set()

    def _source(self, url: str) -> RemoteSource:
        src = self._sources.get(url)
        if src is None:
            src = self._sources[url] = RemoteSource(url)
        return src

    def _local(self, info: TensorInfo) -> TensorInfo:
        """`info` pointing at a local spool file holding its storage (fetched on first use)."""
        if not is_remote(info.source):
            return info
        assert info.source is not None
        if info.layout != Layout.STRIDED or info.device == "meta":
            raise BadInput(info.source, f"values of a {info.layout} {info.device} tensor are not read by statecli")
        if info.data_offset is None:
            raise BadInput(info.source, "values of a remote torch.distributed.checkpoint folder are not read; "
                                        "download the folder and run statecli on it")
        zipheaders.check(info.source, info.data_offset, self._source(info.source))
        nbytes = info.storage_size
        key = (info.source, info.data_offset, nbytes)
        path = self._spools.get(key)
        if path is None:
            path = self._spool(info.source, info.data_offset, nbytes)
            self._spools[key] = path
            while len(self._spools) > SPOOLED:
                self._drop(self._spools.popitem(last=False)[1])
        else:
            self._spools.move_to_end(key)
        return dataclasses.replace(info, source=path, data_offset=0)

    def _spool(self, url: str, offset: int, nbytes: int) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="statecli-remote-")
        fd, path = tempfile.mkstemp(dir=self._dir, suffix=".bin")
        try:
            os.ftruncate(fd, nbytes)
            fetch(self._source(url), offset, nbytes, lambda lo, data: _pwrite_all(fd, data, lo))
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return path

    def _drop(self, path: str) -> None:
        # A mapping still viewed by a tensor cannot be closed; forgetting it lets it go with the tensor.
        self._maps.pop(path, None)
        fd = self._fds.pop(path, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass

    def array(self, info: TensorInfo) -> np.ndarray:
        return super().array(self._local(info))

    def storage(self, info: TensorInfo) -> torch.Tensor:
        return super().storage(self._local(info))

    def tensor(self, info: TensorInfo) -> torch.Tensor:
        return super().tensor(self._local(info))

    def flat_span(self, info: TensorInfo, lo: int, hi: int) -> tuple[str, int, int] | None:
        """None for a URL: its bytes come by ranged reads, which `read_flat` already batches and reads ahead."""
        return None if is_remote(info.source) else super().flat_span(info, lo, hi)

    def read_flat(self, info: TensorInfo, lo: int, hi: int, slot: int | None = None) -> np.ndarray:
        """Elements lo..hi straight from ranged reads into the array (no spool) where numpy reads them;
        `slot` is honoured for local files only (ranged reads arrive in their own buffers)."""
        import numpy as np

        dt = np_dtype(info.dtype)
        if not is_remote(info.source) or dt is None or not numpy_readable(info) or not info.is_contiguous:
            return super().read_flat(self._local(info), lo, hi, slot)
        assert info.source is not None and info.data_offset is not None
        zipheaders.check(info.source, info.data_offset, self._source(info.source))
        size = dt.itemsize
        start, n = info.data_offset + (info.storage_offset + lo) * size, (hi - lo) * size
        end = info.data_offset + (info.storage_offset + info.numel) * size
        with self._lock:
            fut = self._ahead.pop((info.source, start, n), None)
            # Chunks are asked for in order: the next few go out now, so AHEAD requests per side are in flight.
            for k in range(1, AHEAD + 1):
                at = start + k * n
                if at >= end:
                    break
                key = (info.source, at, min(n, end - at))
                if key not in self._ahead and key not in self._taken:
                    self._ahead[key] = self._executor().submit(self._bytes, info.source, at, key[2])
            self._taken.add((info.source, start, n))
        buf = fut.result() if fut is not None else self._bytes(info.source, start, n)
        return np.frombuffer(buf, dtype=dt)

    def _bytes(self, url: str, start: int, n: int) -> bytearray:
        buf = bytearray(n)  # a bytearray exactly spanned: values.same_bytes compares by memcmp
        view = memoryview(buf)

        def put(at: int, data: bytes) -> None:
            view[at:at + len(data)] = data

        fetch(self._source(url), start, n, put)
        return buf

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(AHEAD)
        return self._pool

    def _forget_ahead(self, url: str | None) -> None:
        with self._lock:
            for key in [k for k in self._ahead if k[0] == url]:
                self._ahead.pop(key).cancel()
            self._taken.clear()

    def release(self, info: TensorInfo) -> None:
        if not is_remote(info.source):
            super().release(info)
            return
        self._forget_ahead(info.source)
        nbytes = info.storage_size
        path = self._spools.pop((info.source or "", info.data_offset or 0, nbytes), None)
        if path is not None:  # this tensor is done: its disk space goes now, not at close
            self._drop(path)

    def release_elements(self, info: TensorInfo, lo: int, hi: int) -> None:
        if not is_remote(info.source):
            super().release_elements(info, lo, hi)

    def release_bytes(self, info: TensorInfo, first: int, last: int) -> None:
        if not is_remote(info.source) or info.data_offset is None:
            super().release_bytes(info, first, last)
            return
        nbytes = info.storage_size
        path = self._spools.get((info.source or "", info.data_offset, nbytes))
        if path is not None:  # the same bytes in the spool, which starts at the storage's first byte
            local = dataclasses.replace(info, source=path, data_offset=0)
            super().release_bytes(local, first - info.data_offset, last - info.data_offset)

    def close(self) -> None:
        for fut in self._ahead.values():
            fut.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        super().close()
        for src in self._sources.values():
            src.close()
        self._sources.clear()
        self._spools.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _pwrite_all(fd: int, data: Any, at: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n


values.REMOTE_READER = RemoteValueReader
