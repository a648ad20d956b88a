"""A read-only file object over a byte source, for readers that want one (zipfile, the unpickler)."""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

from .source import (
    _BLOCKS,
    _LOCK,
    BLOCK,
    CACHE_BLOCKS,
    MAX_RANGE,
    TAIL,
    LocalSource,
    RangeSource,
    RemoteSource,
    Source,
    is_range,
    open_local,
)
from .urls import is_remote


class _Positioned(io.RawIOBase):
    """A read-only file over `self.src` (which has `size` and `close`): the position and the io
    protocol; a subclass says how to `pread` a span."""

    src: Any
    pos: int

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.src.size}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self.pos = base + offset
        return self.pos

    def read(self, n: int | None = -1) -> bytes:
        left = max(0, self.src.size - self.pos)
        n = left if n is None or n < 0 else min(n, left)
        data = self.pread(self.pos, n)
        self.pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def pread(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        if not self.closed:
            self.src.close()
        super().close()


class SourceFile(_Positioned):
    """A read-only, seekable file over a Source for the readers (zipfile, the unpickler): small reads
    come from cached blocks shared by every open of the URL, large ones go out in bounded ranges."""

    def __init__(self, src: Source) -> None:
        super().__init__()
        self.src = src
        self.name = src.name
        self.pos = 0

    def pread(self, offset: int, n: int) -> bytes:
        if n <= 0:
            return b""
        if n > 4 * BLOCK:
            return b"".join(self.src.pread(o, min(MAX_RANGE, offset + n - o)) for o in range(offset, offset + n, MAX_RANGE))
        first, last = offset // BLOCK, (offset + n - 1) // BLOCK
        with _LOCK:
            have = {i: _BLOCKS.get((self.name, i)) for i in range(first, last + 1)}
        missing = [i for i, b in have.items() if b is None]
        if missing:
            lo, hi = missing[0], missing[-1]
            if (hi + 1) * BLOCK >= self.src.size:  # near the end: the zip end record, directory and tail together
                lo = min(lo, max(0, self.src.size - TAIL) // BLOCK)
            start, end = lo * BLOCK, min(self.src.size, (hi + 1) * BLOCK)
            data = self.src.pread(start, end - start)
            with _LOCK:
                for i in range(lo, hi + 1):
                    blk = data[(i - lo) * BLOCK:(i - lo + 1) * BLOCK]
                    _BLOCKS[(self.name, i)] = blk
                    if i in have:
                        have[i] = blk
                while len(_BLOCKS) > CACHE_BLOCKS:
                    _BLOCKS.popitem(last=False)
        joined = b"".join(have[i] or b"" for i in range(first, last + 1))
        return joined[offset - first * BLOCK:offset - first * BLOCK + n]


class RangeFile(_Positioned):
    """A registered byte range of a local file as a read-only file of its own (a DCP item): reads go
    straight to pread, clipped to the range (thousands of small items: no block cache in between)."""

    def __init__(self, src: RangeSource, fd: int) -> None:
        super().__init__()
        self.src, self.fd, self.name, self.pos = src, fd, src.name, 0

    def pread(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, self.src.base + offset) if n > 0 else b""


def open_file(path: str) -> BinaryIO:
    """A read-only file object: a SourceFile for a URL or a registered byte range (a DCP item), the
    regular file itself for a local path."""
    if is_range(path):
        src = RangeSource(path)
        inner = getattr(src.inner, "f", None)
        if isinstance(src.inner, LocalSource) and inner is not None:
            return RangeFile(src, inner.fileno())  # type: ignore[return-value]
        return SourceFile(src)  # type: ignore[return-value]
    return SourceFile(RemoteSource(path)) if is_remote(path) else open_local(path)  # type: ignore[return-value]
