"""Atomic outputs: every writer fills a temp file (or folder) beside the target, which is fsynced and
renamed into place only when the write succeeded; on any error or interrupt it is removed.

Modes: a new output gets 0666 & ~umask (a folder 0777 & ~umask), as `open()` and `mkdir` would give
it; replacing an existing file (`--in-place`, or `-o` over an older output) keeps that file's mode.
Temp names carry a host tag, the writer's pid and its start time (`.statecli-<host>-<pid>-<start>-<random>
[.tmp]`), so the next run on a folder can remove what a killed run left there without touching a live
writer's files, even after the pid was reused; other hosts' files (a shared folder) are never touched.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from ..errors import BadInput, StatecliError, Terminated
from ..units import fmt_bytes

_PREFIX = ".statecli-"
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


@dataclass
class SimulatedDisk:
    """Test-only: a file system with `free` bytes left (writes past it fail with ENOSPC) or one
    mounted read-only. Set `atomic.SIMULATED` to one; production code never does."""

    free: int | None = None
    read_only: bool = False
    written: int = 0


SIMULATED: SimulatedDisk | None = None


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _temp_prefix() -> str:
    pid = os.getpid()
    return f"{_PREFIX}{_host_tag()}-{pid}-{_start_time(pid) or 0}-"


def _start_time(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux /proc); None where unknown. With
    the pid it names one process: a pid reused by a later process has a later start."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
        # fields after the parenthesised command name (which may hold spaces); starttime is field 22
        return int(stat_line[stat_line.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


# A killed replace may leave `.statecli-old-*`, the only copy of the previous output: never swept.
# The start field is absent in names written before it was recorded.
_STALE = re.compile(r"\.statecli-([0-9a-f]{8})-(\d+)-(?:(\d+)-)?")


def current_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    return 0o666 & ~current_umask()


def free_bytes(folder: str) -> int:
    """Bytes free for an unprivileged writer in `folder` (the simulated disk's, in tests)."""
    if SIMULATED is not None and SIMULATED.free is not None:
        return SIMULATED.free  # what is free once the failed write's temp file is gone
    return shutil.disk_usage(folder).free


def check_space(target: str, need: int) -> None:
    """Refuse before writing when the target's file system cannot hold `need` bytes."""
    folder = _folder_of(target)
    if os.path.isdir(folder) and need > free_bytes(folder):
        raise no_space(folder, need)


def no_space(folder: str, need: int | None) -> BadInput:
    needs = f"needs about {fmt_bytes(need)}, " if need else ""
    return BadInput(folder, f"not enough free space for the output ({needs}{fmt_bytes(free_bytes(folder))} free); "
                            "nothing was written and the input is untouched", "free space or write elsewhere with -o")


def _not_writable(folder: str, exc: OSError) -> BadInput:
    why = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
    return BadInput(folder, f"cannot write the output here ({why}); nothing was written",
                    "choose another folder with -o")


class _Counted:
    """A binary file that fails like a full disk once the simulated disk is full (tests only)."""

    def __init__(self, f: IO[bytes], disk: SimulatedDisk) -> None:
        self._f, self._disk = f, disk

    def write(self, data: Any) -> int:
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        if self._disk.free is not None and self._disk.written + n > self._disk.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.written += n
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def open_output(path: str) -> IO[bytes]:
    """Open a temp output for binary writing: the one place every statecli writer opens files."""
    f = open(path, "wb")  # noqa: SIM115 - returned to the caller's `with`
    if SIMULATED is not None:
        return _Counted(f, SIMULATED)  # type: ignore[return-value]
    if _sync_file_range() is not None:
        return _EarlyWriteback(f)  # type: ignore[return-value]
    return f


_FLUSH_STEP = 32 << 20  # bytes written between two writeback starts


class _EarlyWriteback:
    """A binary file whose written bytes start going to disk while later ones are still written
    (sync_file_range(SYNC_FILE_RANGE_WRITE), on a thread of its own): submitting writeback costs
    ~0.3 s per GB of CPU here, which the final fsync (or ext4's flush on close of a truncated file)
    would otherwise pay on the writing thread, after everything else. Durability is unchanged:
    atomic_file still fsyncs before the rename."""

    def __init__(self, f: IO[bytes]) -> None:
        import queue

        self._f, self._fd = f, f.fileno()
        self._started = 0  # bytes below this offset have had their writeback started
        self._queue: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def write(self, data: Any) -> int:
        n = self._f.write(data)
        end = self._f.tell()
        if end - self._started >= _FLUSH_STEP:
            if self._thread is None:
                self._thread = threading.Thread(target=self._flusher, name="statecli-writeback", daemon=True)
                self._thread.start()
            self._f.flush()
            self._queue.put((self._started, end - self._started))
            self._started = end
        return n

    def _flusher(self) -> None:
        fn = _sync_file_range()
        assert fn is not None
        while (span := self._queue.get()) is not None:
            fn(self._fd, span[0], span[1], 2)  # SYNC_FILE_RANGE_WRITE; best effort, errors ignored

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()  # the descriptor stays open until the flusher is done with it
            self._thread = None
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _EarlyWriteback:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_SFR: list[Any] = []


def _sync_file_range() -> Any:
    """libc's sync_file_range (Linux), or None where there is none."""
    if not _SFR:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                fn = ctypes.CDLL(None, use_errno=True).sync_file_range
                fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            except (OSError, AttributeError):
                fn = None
        _SFR.append(fn)
    return _SFR[0]


def remove_stale(folder: str) -> list[str]:
    """Remove temp files/folders a killed statecli run left in `folder`: only this host's, and only
    those whose writer process is gone. Returns the names removed."""
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    host = _host_tag()
    for name in names:
        m = _STALE.match(name)
        if not m or m.group(1) != host or _alive(int(m.group(2)), int(m.group(3) or 0)):
            continue
        path = os.path.join(folder, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(name)
        except OSError:
            continue
    return removed


def _alive(pid: int, start: int = 0) -> bool:
    """Whether the writer (`pid`, started at `start`; 0: not recorded) still runs."""
    try:
        if pid != os.getpid():
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is another user's
        pass
    now = _start_time(pid)
    return not (start and now is not None and now != start)  # a later process reusing the pid


def _folder_of(target: str) -> str:
    from .urls import display_name, is_remote

    if is_remote(target):  # the one choke point of every writer: no local file named "s3:/..." ever appears
        from ..errors import UsageError

        # URL outputs are written to a local temp folder and uploaded after verifying (rewrite/upload.py)
        raise UsageError(display_name(target), "this writer takes local paths only; a URL output is written "
                                               "locally, verified, then uploaded")
    return os.path.dirname(os.path.abspath(target.rstrip("/") or target)) or "."


def _check_writable(folder: str) -> None:
    if SIMULATED is not None and SIMULATED.read_only:
        raise _not_writable(folder, OSError(errno.EROFS, os.strerror(errno.EROFS)))


def _reraise_os(exc: BaseException, folder: str, need: int | None) -> None:
    """Turn a full disk or an unwritable folder into a one-line BadInput; anything else re-raises."""
    if isinstance(exc, StatecliError):
        return
    err: BaseException | None = exc
    while err is not None:
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            raise no_space(folder, need) from exc
        if isinstance(err, OSError) and err.errno in _NOT_WRITABLE:
            raise _not_writable(folder, err) from exc
        if isinstance(err, OSError) and err.errno == errno.EFBIG:  # a file-size limit (ulimit -f, a quota)
            what = f"{need:,} bytes" if need else "the output"
            raise BadInput(folder, f"cannot write {what} here: the file is larger than this process or file system "
                                   "allows (ulimit -f or a per-file limit)", "raise the limit or write elsewhere") from exc
        err = err.__cause__ or err.__context__


def _regular_target(target: str) -> str:
    """Where the bytes go: a symbolic link is followed (the file it names is replaced, the link kept),
    and anything but a regular file there (a device such as /dev/full, a FIFO, a socket, a terminal
    behind /dev/stdout) is refused rather than replaced by a file."""
    real = os.path.realpath(target) if os.path.islink(target) else target
    if os.path.lexists(real) and not os.path.isfile(real):
        what = "a directory" if os.path.isdir(real) else "not a regular file (a device, FIFO or socket)"
        raise BadInput(target, f"exists and is {what}; statecli writes regular files only",
                       "give a new path (for stdout use -o -)")
    return real


@contextmanager
def atomic_file(target: str, need: int | None = None) -> Iterator[str]:
    """Yield a temp path in the target's directory; on success fsync and rename it over `target`,
    on any error or interrupt remove it, so no partial output ever exists under the final name.
    `need` (bytes, when known) goes into the message of a full disk."""
    target = _regular_target(target)
    folder = _folder_of(target)
    if not os.path.isdir(folder):
        raise BadInput(target, "output directory does not exist")
    _check_writable(folder)
    try:
        old_mode = stat.S_IMODE(os.stat(target).st_mode) if os.path.isfile(target) else None
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(), suffix=".tmp", dir=folder)
    except OSError as exc:
        _reraise_os(exc, folder, need)
        raise
    os.close(fd)
    try:
        with _sigterm_as_interrupt():
            yield tmp
            os.chmod(tmp, old_mode if old_mode is not None else new_file_mode())
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        _fsync_dir(folder)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        _reraise_os(exc, folder, need)
        raise


@contextmanager
def atomic_dir(target: str, replace: bool = False, need: int | None = None) -> Iterator[str]:
    """The directory counterpart of atomic_file, for sharded, Hugging Face and DCP outputs."""
    parent = _folder_of(target)
    if os.path.exists(target) and not replace and (not os.path.isdir(target) or os.listdir(target)):
        raise BadInput(target, "output exists and is not an empty directory; choose another path")
    if not os.path.isdir(parent):
        raise BadInput(target, "output directory does not exist")
    _check_writable(parent)
    try:
        old_mode = stat.S_IMODE(os.stat(target).st_mode) if os.path.isdir(target) else None
        tmp = tempfile.mkdtemp(prefix=_temp_prefix(), dir=parent)
    except OSError as exc:
        _reraise_os(exc, parent, need)
        raise
    try:
        with _sigterm_as_interrupt():
            yield tmp
            _fsync_tree(tmp)
            os.chmod(tmp, old_mode if old_mode is not None else 0o777 & ~current_umask())
            backup = None
            if os.path.exists(target):
                backup = tempfile.mkdtemp(prefix=_PREFIX + "old-" + _temp_prefix()[len(_PREFIX):], dir=parent)
                os.rmdir(backup)
                os.rename(target, backup)
            os.rename(tmp, target)
            if backup:
                shutil.rmtree(backup, ignore_errors=True)
        _fsync_dir(parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _reraise_os(exc, parent, need)
        raise


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _fsync_tree(top: str) -> None:
    """Every regular file below `top` (a folder output may hold subfolders, links and read-only
    copies: links are not followed, files are opened read-only) and every subfolder."""
    for folder, _, files in os.walk(top):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if folder != top:
            _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
