"""diff's chunk comparisons on two forked worker processes, for pairs large enough to pay for them.

numpy holds the GIL between its passes, and `_fast_f32` makes ~15 short calls per block: two threads
reach ~1.1x one core here, two processes ~1.5x. Workers are forked (a few ms, no re-import of the
caller's __main__) and only while the process runs no other thread, so no lock another thread holds
is copied into them; each reads its share of the pair front to back with pread (the parent sends only
offsets) and returns the merged figures of its share. Shares merge in order: figures do not depend on
timing."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from .compare import Partial, compare_chunk

MIN_BYTES = 512 << 20  # both sides together: below this threads are as fast
SPAN = 1 << 20  # elements per read: 4 MiB per side of float32
WORKERS = min(2, os.cpu_count() or 1)
_FDS: dict[str, int] = {}  # per worker process: each file opened once

Span = tuple[str, int, int]  # (file, first byte, byte count)


@dataclass(frozen=True)
class Task:
    pieces: tuple[tuple[Span, Span], ...]
    da: str
    db: str
    rtol: float
    atol: float
    equal_nan: bool


def run_task(t: Task) -> Partial:
    """In a worker: read and compare the pieces in order (each file front to back, so readahead keeps
    up on a cold cache) and return their merged figures."""
    from ..io.values import pread_array

    total = Partial()
    for piece in t.pieces:
        arrays = []
        for slot, ((path, start, n), dtype) in enumerate(zip(piece, (t.da, t.db))):
            fd = _FDS.get(path)
            if fd is None:
                fd = _FDS[path] = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            arrays.append(pread_array(fd, path, start, n, dtype, slot))
        total.merge(compare_chunk(arrays[0], arrays[1], t.da, t.db, t.rtol, t.atol, t.equal_nan))
    return total


class ChunkPool:
    """Forked on first use; `close()` ends the workers."""

    def __init__(self) -> None:
        self._ex: ProcessPoolExecutor | None = None

    def map(self, tasks: list[Task]) -> Iterator[Partial]:
        import multiprocessing

        if self._ex is None:
            self._ex = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork"),
                                           initializer=_worker_init, initargs=(os.getpid(),))
        return _unbroken(self._ex.map(run_task, tasks))

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(cancel_futures=True)
            self._ex = None


def _worker_init(parent: int) -> None:
    """In each worker: Ctrl-C is the parent's to handle (it shuts the pool down), and the worker ends
    with its parent, however the parent ends (SIGKILL included: PR_SET_PDEATHSIG on Linux)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent was gone before the signal was armed
        os._exit(1)


def _unbroken(parts: Iterator[Partial]) -> Iterator[Partial]:
    """A worker that died (killed, out of memory) is one clear error, not an internal one."""
    from concurrent.futures.process import BrokenProcessPool

    from ..errors import StatecliError

    try:
        yield from parts
    except BrokenProcessPool as exc:
        raise StatecliError(None, "a diff worker process ended unexpectedly (killed, or out of memory?)") from exc


def pool_for(total_bytes: int, files: set[str]) -> ChunkPool | None:
    """A pool when the pair is big, the machine has two cores, fork exists, no other thread runs and the
    files are in the page cache. From disk, one reader per file keeps readahead sequential and the
    threads keep up with the disk (cold `diff` reads as fast as a plain read); two processes reading
    two regions of each file do not."""
    import multiprocessing

    if WORKERS < 2 or total_bytes < MIN_BYTES or threading.active_count() > 1:
        return None
    if "fork" not in multiprocessing.get_all_start_methods() or not all(_cached(f) for f in files):
        return None
    return ChunkPool()


def _cached(path: str, probes: int = 32) -> bool:
    """Whether pages spread over the file are in the page cache: preadv with RWF_NOWAIT fails with
    EAGAIN instead of going to the disk (Linux >= 4.14; elsewhere: unknown, so no)."""
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        page = bytearray(1)
        for i in range(probes):
            os.preadv(fd, [page], size * i // probes, flag)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def tasks(ra: Any, rb: Any, x: Any, y: Any, rtol: float, atol: float, equal_nan: bool) -> list[Task] | None:
    """One task per worker, each a contiguous share of the pair (None: not plain local reads)."""
    pieces = []
    for lo in range(0, x.numel, SPAN):
        hi = min(lo + SPAN, x.numel)
        sa, sb = ra.flat_span(x, lo, hi), rb.flat_span(y, lo, hi)
        if sa is None or sb is None:
            return None
        pieces.append((sa, sb))
    share = -(-len(pieces) // WORKERS)
    return [Task(tuple(pieces[i:i + share]), x.dtype, y.dtype, rtol, atol, equal_nan)
            for i in range(0, len(pieces), share)]
