"""The fast lane of stream.chunks: a contiguous tensor of a local file read with pread into reused
buffers, cast block by block into reused buffers and checksummed (zip CRC-32) on worker threads,
while the caller's thread writes the chunk before; no zeroed allocation or extra copy per chunk."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..io.values import THREADS, np_dtype, ordered_map, pread_into
from . import cast as npcast
from .cast import Losses

if TYPE_CHECKING:
    import numpy as np

__all__ = ["CHUNK_BYTES", "LocalChunks", "crc32_combine"]

CHUNK_BYTES = 4 << 20  # per step: small enough that a chunk is still in cache when it is written
_BLOCK = 1 << 16  # elements cast and counted at a time: source, output and temporaries stay in L2
_KEPT = 4 * THREADS + 4  # buffers the pool keeps: 2 x THREADS steps in flight, each with an input and output


class _Pool:
    """Reused CHUNK_BYTES buffers: a fresh bytearray costs a page fault per 4 KiB on first touch
    (~2.6 GB/s here), as much as the write it feeds. Shared by every stream of a process."""

    def __init__(self) -> None:
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(CHUNK_BYTES)

    def give(self, buf: bytearray) -> None:
        with self._lock:
            if len(self._free) < _KEPT and len(buf) == CHUNK_BYTES:
                self._free.append(buf)


_POOL = _Pool()


class LocalChunks:
    """The bytes of `count` elements of dtype `src` at byte `offset` of the file `path`, cast to `dst`
    (None: as they are) with losses counted into `losses`, as memoryviews in order. A chunk's buffer
    is reused once the consumer asks for the next one, so the consumer must be done with it by then
    (a write is). After iterating, crc32() is the zip CRC-32 of every byte yielded."""

    def __init__(self, path: str, offset: int, count: int, src: str, dst: str | None, losses: Losses | None,
                 checksum: bool) -> None:
        self.path, self.offset, self.count, self.src, self.dst = path, offset, count, src, dst
        self.losses, self.checksum = losses, checksum
        self._crc = 0

    def crc32(self) -> int:
        if not self.checksum:  # never a silent zero in a zip record
            raise RuntimeError("this stream was not checksummed")
        return self._crc

    def __iter__(self) -> Iterator[memoryview]:
        sdt = np_dtype(self.src)
        ddt = np_dtype(self.dst) if self.dst else sdt
        assert sdt is not None and ddt is not None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if self.offset + self.count * sdt.itemsize > os.fstat(fd).st_size:
                raise BadInput(self.path, f"tensor data at byte {self.offset} runs past the end of the file")
            per = max(1, CHUNK_BYTES // max(sdt.itemsize, ddt.itemsize))
            lossy = self.losses is not None and self.dst is not None and npcast.lossy(self.src, self.dst)

            def step(lo: int, hi: int) -> tuple[bytearray, memoryview, int, Losses]:
                return self._step(fd, sdt, ddt, lo, hi, lossy)

            steps = ordered_map(step, self.count, per)
            try:
                yield from self._drain(steps)
            finally:
                close = getattr(steps, "close", None)
                if close is not None:
                    close()  # waits for the steps in flight: none may read the descriptor once it is closed
        finally:
            os.close(fd)

    def _drain(self, steps: Iterator[tuple[bytearray, memoryview, int, Losses]]) -> Iterator[memoryview]:
        held: bytearray | None = None
        for buf, data, crc, part in steps:
            if held is not None:
                _POOL.give(held)  # written by now: the consumer asked for the next chunk
            held = None
            if self.checksum:
                self._crc = crc32_combine(self._crc, crc, data.nbytes)
            if self.losses is not None:
                self.losses.overflow += part.overflow
                self.losses.underflow += part.underflow
            yield data
            held = buf
        if held is not None:
            _POOL.give(held)

    def _step(self, fd: int, sdt: np.dtype[Any], ddt: np.dtype[Any], lo: int, hi: int,
              lossy: bool) -> tuple[bytearray, memoryview, int, Losses]:
        """On a worker: read elements lo..hi, cast and count them, checksum the result."""
        import numpy as np

        part = Losses()
        inbuf = _POOL.take()
        nbytes = (hi - lo) * sdt.itemsize
        view = memoryview(inbuf)[:nbytes]
        pread_into(fd, self.path, view, self.offset + lo * sdt.itemsize)
        buf, data = inbuf, view
        if self.dst is not None:
            a = np.frombuffer(inbuf, dtype=sdt, count=hi - lo)
            buf = _POOL.take()
            out = np.frombuffer(buf, dtype=ddt, count=hi - lo)
            for b in range(0, hi - lo, _BLOCK):
                src, dst = a[b:b + _BLOCK], out[b:b + _BLOCK]
                npcast.cast_into(src, self.dst, dst)
                if lossy:
                    npcast.count(part, src, dst, self.dst)
            _POOL.give(inbuf)
            data = memoryview(buf)[:(hi - lo) * ddt.itemsize]
        return buf, data, zlib.crc32(data) if self.checksum else 0, part


# CRC-32 of a concatenation from the CRCs of its parts (zlib's crc32_combine, which Python's zlib
# does not expose): polynomial arithmetic modulo the CRC polynomial, reflected, as zlib does it.
_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    p, table = 1 << 30, []  # x**1
    for _ in range(32):
        table.append(p)
        p = _multmodp(p, p)
    return table


_X2N = _x2n_table()  # x**(2**k) modulo the polynomial


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of A + B from crc32(A), crc32(B) and len(B)."""
    p, k, n = 1 << 31, 3, len2  # x**(8 * len2): len2 bytes of zeros shift crc1 that far
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2
