"""diff's value comparisons as a queue of byte-range tasks that span pairs (small tensors batched into one
task, big ones split into pieces), run on two forked worker processes when the pair of files is large
and in the page cache, else on the caller's threads (`run_tasks`).

numpy holds the GIL between its passes, and `_fast_f32` makes ~15 short calls per block: two threads
reach ~1.1x one core here, two processes ~1.5x. Workers are forked (a few ms, no re-import of the
caller's __main__) and only while the process runs no other thread, so no lock another thread holds
is copied into them; each maps its tasks' pieces (the parent sends only offsets) and returns
each pair's merged figures. Tasks merge in order: figures do not depend on timing."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from .compare import Partial, compare_chunk

MIN_BYTES = 512 << 20  # both sides together: below this threads are as fast
SPAN = 1 << 20  # elements per read: 4 MiB per side of float32
TASK_BYTES = 16 << 20  # bytes per side per task: small tensors batched into one hand-off to a worker
WORKERS = min(2, os.cpu_count() or 1)
_FDS: dict[str, int] = {}  # per worker process: each file opened once

Span = tuple[str, int, int]  # (file, first byte, byte count)


@dataclass(frozen=True)
class Piece:
    """Elements of pair number `pair` at the same flat positions in A and B: a span of each file."""

    pair: int
    a: Span
    b: Span
    da: str
    db: str


@dataclass(frozen=True)
class Task:
    """A run of pieces (of one pair or of many small ones) read and compared by one worker."""

    pieces: tuple[Piece, ...]
    rtol: float
    atol: float
    equal_nan: bool


def run_task(t: Task, fd_of: Callable[[str], int] | None = None) -> list[tuple[int, Partial]]:
    """Read and compare the pieces in order (each file front to back, so readahead keeps up on a cold
    cache); (pair, figures) per pair the task touched, merged in piece order. `fd_of`: the caller's open
    files (threads); a worker process opens each file once itself. Each piece is compared on the files'
    mapped pages (io/blocks.mapped: no copy), unmapped before the next."""
    import numpy as np

    from ..io.blocks import mapped
    from ..io.values import np_dtype

    fd = fd_of if fd_of is not None else _worker_fd
    out: list[tuple[int, Partial]] = []
    for piece in t.pieces:
        (pa, sa, na), (pb, sb, nb) = piece.a, piece.b
        with mapped(fd(pa), pa, sa, na) as va, mapped(fd(pb), pb, sb, nb) as vb:
            part = compare_chunk(np.frombuffer(va, np_dtype(piece.da)), np.frombuffer(vb, np_dtype(piece.db)),
                                 piece.da, piece.db, t.rtol, t.atol, t.equal_nan)
        if out and out[-1][0] == piece.pair:
            out[-1][1].merge(part)
        else:
            out.append((piece.pair, part))
    return out


def _worker_fd(path: str) -> int:
    fd = _FDS.get(path)
    if fd is None:
        fd = _FDS[path] = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return fd


class ChunkPool:
    """Forked on first use; `close()` ends the workers."""

    def __init__(self) -> None:
        self._ex: ProcessPoolExecutor | None = None

    def map(self, tasks: list[Task]) -> Iterator[list[tuple[int, Partial]]]:
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


def _unbroken(parts: Iterator[list[tuple[int, Partial]]]) -> Iterator[list[tuple[int, Partial]]]:
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


def tasks(ra: Any, rb: Any, pairs: Sequence[tuple[int, Any, Any]], rtol: float, atol: float, equal_nan: bool,
          task_bytes: int = TASK_BYTES) -> tuple[list[Task], list[int]]:
    """The pairs numpy reads as plain bytes of local files, cut into pieces of at most SPAN elements and
    grouped into tasks of about `task_bytes` per side that span pairs (small tensors batched, big ones
    split), in A's file order (a .pt's records front to back); and the pair numbers left to the caller."""
    pieces: list[Piece] = []
    rest: list[int] = []
    for i, x, y in pairs:
        sa, sb = ra.flat_span(x, 0, x.numel), rb.flat_span(y, 0, y.numel)
        if sa is None or sb is None or x.numel != y.numel or not x.numel:
            rest.append(i)
            continue
        ia, ib = sa[2] // x.numel, sb[2] // y.numel
        for lo in range(0, x.numel, SPAN):
            n = min(SPAN, x.numel - lo)
            pieces.append(Piece(i, (sa[0], sa[1] + lo * ia, n * ia), (sb[0], sb[1] + lo * ib, n * ib), x.dtype, y.dtype))
    pieces.sort(key=lambda p: (p.a[0], p.a[1]))
    out: list[Task] = []
    run: list[Piece] = []
    size = 0
    for p in pieces:
        run.append(p)
        size += max(p.a[2], p.b[2])
        if size >= task_bytes:
            out.append(Task(tuple(run), rtol, atol, equal_nan))
            run, size = [], 0
    if run:
        out.append(Task(tuple(run), rtol, atol, equal_nan))
    return out, rest


def run_tasks(work: list[Task], pool: ChunkPool | None, fd_of: Callable[[str], int]) -> Iterator[list[tuple[int, Partial]]]:
    """Each task's (pair, figures), in task order: on the pool's processes, else on the caller's threads."""
    from ..io.values import ordered_items

    if pool is not None:
        return pool.map(work)
    return ordered_items(lambda t: run_task(t, fd_of), work)


def batched(ra: Any, rb: Any, pairs: Sequence[tuple[int, Any, Any]], rtol: float, atol: float,
            equal_nan: bool) -> dict[int, Partial]:
    """The merged figures of every pair that is plain bytes of local files on both sides, by pair number
    (the others are left to the caller): one queue of tasks, on the worker processes when the pair of
    files is large and cached, else on threads."""
    work, _ = tasks(ra, rb, pairs, rtol, atol, equal_nan)
    pool = pool_for(sum(p.a[2] + p.b[2] for t in work for p in t.pieces),
                    {s[0] for t in work for p in t.pieces for s in (p.a, p.b)}) if work else None
    totals: dict[int, Partial] = {}
    try:
        for done in run_tasks(work, pool, ra.fd):
            for i, part in done:
                totals.setdefault(i, Partial()).merge(part)
    finally:
        if pool is not None:
            pool.close()
    return totals
