"""Value passes in blocks that span tensors: the byte ranges of many tensors, in file order, cut into reads
of about BLOCK bytes (small tensors batched into one read, big ones split), fed to the workers as a queue
of byte ranges rather than one task per tensor. Each block's pieces say which elements of which tensor it
holds, so a pass merges its per-piece results tensor by tensor, in order.

Only tensors whose reader gives a plain byte span (`ValueReader.flat_span`) go into blocks; the caller
reads the others (DCP pieces, views, dequantized or remote tensors) one tensor at a time with `read_flat`."""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .values import THREADS, ordered_items, pread_into

if TYPE_CHECKING:
    import numpy as np

    from ..state import TensorInfo
    from .values import ValueReader

T = TypeVar("T")
BLOCK = 8 << 20  # bytes per read: big enough that per-read costs vanish, small enough to stay in cache
GAP = 4096  # bytes between two tensors read through rather than starting a new read (a .pt's local headers)
_BUFFERS = threading.local()
# A block of a cached file is mapped with its page-table entries filled in one call, not copied: mapping
# 1 GiB costs a quarter of reading it, and the kernels then read the page cache itself (Linux).
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


@dataclass(frozen=True)
class Piece:
    """Elements lo..hi of the caller's tensor number `index`, at byte `at` of its block."""

    index: int
    lo: int
    hi: int
    at: int


@dataclass(frozen=True)
class Block:
    """One read: `nbytes` from byte `start` of `path`, holding `pieces` in file order."""

    path: str
    start: int
    nbytes: int
    pieces: tuple[Piece, ...]


def plan(reader: ValueReader, infos: Sequence[TensorInfo], block: int = BLOCK) -> tuple[list[Block], list[int]]:
    """Blocks over the tensors `reader` reads as plain bytes, sorted by file and offset (a .pt's records in
    file order), and the indexes of the other tensors (non-empty ones the caller reads itself)."""
    spans: list[tuple[str, int, int, int]] = []  # (path, first byte, itemsize, index)
    rest: list[int] = []
    for i, t in enumerate(infos):
        span = reader.flat_span(t, 0, t.numel) if t.numel else None
        if span is None:
            if t.numel:
                rest.append(i)
            continue
        spans.append((span[0], span[1], span[2] // t.numel, i))
    spans.sort()
    out: list[Block] = []
    cur: list[Piece] = []
    path, start, end = "", 0, 0
    for p, first, size, i in spans:
        n, lo = infos[i].numel, 0
        while lo < n:
            at = first + lo * size
            if cur and (p != path or at < end or at - end > GAP or at + size > start + block):
                out.append(Block(path, start, end - start, tuple(cur)))
                cur = []
            if not cur:
                path, start = p, at
            hi = min(n, lo + max(1, (start + block - at) // size))
            cur.append(Piece(i, lo, hi, at - start))
            end, lo = at + (hi - lo) * size, hi
    if cur:
        out.append(Block(path, start, end - start, tuple(cur)))
    return out, rest


def run(reader: ValueReader, blocks: Sequence[Block], fn: Callable[[Block, memoryview], T],
        threads: int = THREADS) -> Iterator[T]:
    """fn(block, its bytes) over the blocks on `threads` workers, results in block order. The bytes are the
    block's mapped pages (`mapped`) or a reused buffer: `fn` keeps no view of them."""

    def one(b: Block) -> T:
        with mapped(reader.fd(b.path), b.path, b.start, b.nbytes) as view:
            return fn(b, view)

    return ordered_items(one, blocks, threads)


@contextmanager
def mapped(fd: int, path: str, start: int, nbytes: int) -> Iterator[memoryview]:
    """`nbytes` from byte `start` of an open file, which the caller has checked against the file's size:
    mapped read-only and populated (no copy; unmapped on exit, so RSS stays a few blocks), or read into
    this thread's reused buffer where mmap cannot populate. A view still held on exit keeps its
    mapping alive until it goes (no unmapped memory is ever read)."""
    base = start - start % mmap.ALLOCATIONGRANULARITY
    mm = None
    if _POPULATE and nbytes and start + nbytes <= os.fstat(fd).st_size:  # a short file: pread says so
        try:
            mm = mmap.mmap(fd, start + nbytes - base, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ,
                           offset=base)
        except OSError:  # a file system that cannot map
            mm = None
    if mm is None:
        view = _buffer(nbytes)
        pread_into(fd, path, view, start)
        yield view
        return
    whole = memoryview(mm)
    view = whole[start - base:]
    try:
        yield view
    finally:
        try:
            view.release()
            whole.release()
            mm.close()
        except BufferError:  # an array over the block outlived it: the mapping goes with the array
            pass


def piece_array(block_bytes: memoryview, piece: Piece, dtype: np.dtype[Any] | None) -> np.ndarray:
    """A piece's elements as a 1-D array over the block's buffer (no copy)."""
    import numpy as np

    return np.frombuffer(block_bytes, dtype=dtype, count=piece.hi - piece.lo, offset=piece.at)


def _buffer(nbytes: int) -> memoryview:
    buf: bytearray | None = getattr(_BUFFERS, "buf", None)
    if buf is None or len(buf) < nbytes:
        buf = _BUFFERS.buf = bytearray(max(nbytes, BLOCK))
    return memoryview(buf)[:nbytes]


__all__ = ["BLOCK", "Block", "Piece", "mapped", "piece_array", "plan", "run"]
