"""Where the per-checkpoint function runs: local threads (remote metadata is latency-bound), local
processes (value work is CPU-bound), or a Dask `distributed` cluster. Each executor only maps
`run_task` over tasks and yields records as they finish, with a bounded number in flight; a new engine
(Ray) is one more class with `records()` and `close()`."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ..errors import UsageError
from .record import Task, run_task

__all__ = ["Executor", "executor_for"]

WINDOW = 4  # tasks in flight per worker: enough to hide latency, few enough that a 10,000-file list costs nothing
# A scheduler that answers at all answers within milliseconds; distributed's own default (30 s of retries)
# made a mistyped address or a stopped cluster look like a hung run.
CONNECT_TIMEOUT_S = 3


class Executor(Protocol):
    workers: int

    def records(self, tasks: Iterable[Task], stop: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """Records as tasks finish; once `stop()` is true no further task starts."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """A concurrent.futures pool: threads, or processes (spawned: no forked copies of fsspec's event loop)."""

    def __init__(self, workers: int, processes: bool) -> None:
        self.workers = workers
        if processes:
            import multiprocessing

            self.pool: cf.Executor = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        else:
            self.pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="statecli-batch")

    def records(self, tasks: Iterable[Task], stop: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        todo = iter(tasks)
        pending: set[cf.Future[dict[str, Any]]] = set()
        order: dict[cf.Future[dict[str, Any]], int] = {}
        while True:
            while not stop() and len(pending) < self.workers * WINDOW:
                task = next(todo, None)
                if task is None:
                    break
                fut = self.pool.submit(run_task, task)
                order[fut] = len(order)
                pending.add(fut)
            if not pending:
                return
            done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)  # and reads stop()
            for fut in sorted(done, key=order.__getitem__):  # several finish at once: in the order given
                if stop():
                    break  # after the failure that stops the run, no further record
                if not fut.cancelled():
                    yield fut.result()
            if stop():  # what has not started never will; what runs is let finish, unrecorded
                pending = {fut for fut in pending if not fut.cancel()}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """The same function on a Dask cluster: `dask:local` starts a LocalCluster of worker processes,
    `dask://HOST:PORT` joins a running scheduler. Workers read through their own fsspec file systems."""

    def __init__(self, address: str, workers: int) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            from ..extras import Extra, MissingExtra

            raise MissingExtra("distributed", Extra.DASK) from exc
        self.cluster = None
        if address == "local":
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=":0")  # no fixed port: another cluster may hold 8787
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(f"tcp://{address}", timeout=f"{CONNECT_TIMEOUT_S}s")
            except OSError:  # distributed's timeouts are OSErrors that repeat the address: one line of our own
                from ..errors import BadInput

                raise BadInput(f"dask://{address}", f"no Dask scheduler answered within {CONNECT_TIMEOUT_S} s",
                               "start one there (dask scheduler) or use --executor dask:local") from None
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})) or workers)

    def records(self, tasks: Iterable[Task], stop: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        from distributed import as_completed

        todo = iter(tasks)
        first = [self.client.submit(run_task, t, pure=False) for t in _take(todo, self.workers * WINDOW)]
        if not first:
            return
        flow = as_completed(first)
        for fut in flow:
            yield fut.result()
            if stop():
                for other in list(flow.futures):
                    other.cancel()
                return
            task = next(todo, None)
            if task is not None:
                flow.add(self.client.submit(run_task, task, pure=False))

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _take(it: Iterator[Task], n: int) -> list[Task]:
    out = []
    for _ in range(n):
        t = next(it, None)
        if t is None:
            break
        out.append(t)
    return out


def executor_for(spec: str, jobs: int, values: bool) -> Executor:
    """`local` (threads, or processes for value work when jobs > 1), `dask:local`, `dask://HOST:PORT`."""
    if spec == "local":
        return LocalExecutor(max(1, jobs), processes=values and jobs > 1)
    if spec == "dask:local":
        return DaskExecutor("local", max(1, jobs))
    if spec.startswith("dask://"):
        return DaskExecutor(spec[len("dask://"):], max(1, jobs))
    raise UsageError(None, f"--executor {spec!r} is not known", "use local, dask:local or dask://HOST:PORT")
