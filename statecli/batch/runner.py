"""A batch run: tasks for every input, the ones already in the NDJSON output skipped (--resume), the rest
run by an executor, each record appended as it finishes, and one exit code for all (the worst)."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput, ExitCode, KeptInterrupt, Terminated
from .executors import Executor, executor_for
from .inputs import Input
from .record import Command, Task, cached_record

__all__ = ["BatchOptions", "BatchSummary", "default_cache_dir", "read_records", "run_batch"]


def default_cache_dir() -> str:
    """$XDG_CACHE_HOME/statecli/batch, else ~/.cache/statecli/batch."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "statecli", "batch")


@dataclass(frozen=True)
class BatchOptions:
    ndjson: str
    jobs: int = 1
    executor: str = "local"
    resume: bool = False
    cache_dir: str | None = None  # None: no cache
    fail_fast: bool = False
    max_rate: float | None = None


@dataclass(frozen=True)
class BatchSummary:
    inputs: int
    written: int  # records this run appended
    resumed: int  # inputs whose record the output already had
    cached: int
    errors: int
    exit_code: ExitCode
    stopped: bool  # --fail-fast ended the run early


def read_records(path: str, repair: bool = False) -> list[dict[str, Any]]:
    """The records of an NDJSON output. A last line without its newline is what a kill mid-write leaves:
    with `repair` it is cut off the file (its input runs again), otherwise ignored."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BadInput(path, f"cannot read the records: {exc.strerror or exc}") from exc
    whole = data.rfind(b"\n") + 1
    if repair and whole < len(data):
        with open(path, "r+b") as f:
            f.truncate(whole)
    out = []
    for line in data[:whole].splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a damaged line: its input is simply run again
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            out.append(rec)
    return out


def _tasks(command: Command, inputs: Sequence[Input], options: Mapping[str, Any], opts: BatchOptions,
           done: set[str]) -> Iterator[Task]:
    frozen = tuple(sorted((k, v) for k, v in options.items()))
    for item in inputs:
        info = tuple(sorted((str(k), _plain(v)) for k, v in item.info.items())) if item.info is not None else None
        task = Task(command, item.name, frozen, info, opts.cache_dir, opts.max_rate)
        if task.id not in done:
            yield task


def _plain(v: Any) -> Any:
    """A listing's value as JSON data (dates and other objects as text): tasks travel to other processes."""
    return v if isinstance(v, (str, int, float, bool, type(None))) else str(v)


def _answered(tasks: Sequence[Task], executor: Executor, stop: Callable[[], bool]) -> Iterator[dict[str, Any]]:
    """The cache's answers first, here and in the order given (a cached record needs no worker: the pool's
    round trip cost a warm run more than the look-up), then the executor's records of the rest."""
    rest = []
    for task in tasks:
        if stop():
            return
        rec = cached_record(task)
        if rec is None:
            rest.append(task)
        else:
            yield rec
    if rest and not stop():
        yield from executor.records(rest, stop)


def run_batch(command: Command, inputs: Sequence[Input], options: Mapping[str, Any], opts: BatchOptions,
              progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> BatchSummary:
    """Run `command` over `inputs`, appending one record per checkpoint to `opts.ndjson` as it finishes."""
    executor = executor_for(opts.executor, opts.jobs, command.reads_values)  # before OUT is touched: it may fail
    previous = read_records(opts.ndjson, repair=True) if opts.resume else []
    done = {r["id"] for r in previous}
    if not opts.resume and os.path.exists(opts.ndjson) and os.path.getsize(opts.ndjson):
        open(opts.ndjson, "w").close()  # a fresh run starts a fresh file; --resume keeps and extends it
    tasks = list(_tasks(command, inputs, options, opts, done))
    resumed = len(inputs) - len(tasks)
    worst = max((int(r.get("exit_code", 2)) for r in previous), default=0)
    written = cached = errors = 0
    failed = threading.Event()  # --fail-fast: set by the first record that does not pass
    try:
        with _signals_stop_the_run() as caught:
            try:
                with open(opts.ndjson, "a", encoding="utf-8") as out:
                    for rec in _answered(tasks, executor, lambda: failed.is_set() or bool(caught)):
                        out.write(json.dumps(rec, sort_keys=True, allow_nan=False, default=str) + "\n")
                        out.flush()  # one record at a time: a kill loses at most the line being written
                        written += 1
                        cached += bool(rec["run"]["cached"])
                        errors += "error" in rec
                        worst = max(worst, int(rec["exit_code"]))
                        if opts.fail_fast and rec["exit_code"] != 0:
                            failed.set()
                        if progress is not None:
                            progress(resumed + written, len(inputs), rec)
            finally:
                executor.close()  # under the same handlers: a signal while the pool shuts down is noted too
        if caught:
            raise Terminated if caught[0] == signal.SIGTERM else KeyboardInterrupt
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the finished records stay, and --resume finishes
        kept = len(previous) + written
        if not kept:
            raise
        raise KeptInterrupt(f"{kept} record(s) kept in {opts.ndjson}; rerun with --resume to finish",
                            isinstance(exc, Terminated)) from exc
    return BatchSummary(len(inputs), written, resumed, cached, errors, ExitCode(worst),
                        stopped=failed.is_set() and resumed + written < len(inputs))


@contextmanager
def _signals_stop_the_run() -> Iterator[list[int]]:
    """Ctrl-C and SIGTERM during a run: noted (the list gets the signal) and read by the loop between records,
    which then starts nothing more, lets the running checkpoints finish and stops, instead of an exception
    raised wherever the main thread is: raised inside concurrent.futures' submit or wait, it could leave the
    pool's lock held and its shutdown waiting forever. A second signal raises at once (a checkpoint that takes
    long to finish is not waited for). In the main thread only; an ignored signal stays so."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def note(signum: int, frame: Any) -> None:
        if caught:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        caught.append(signum)

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in before.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, note)
    try:
        yield caught
    finally:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)
