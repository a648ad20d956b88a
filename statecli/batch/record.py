"""The one per-checkpoint function of a batch run, `run_task(task) -> record`: pure apart from reading
the checkpoint (and the result cache), picklable, so local threads, local processes and Dask workers all
run exactly it. A record is a versioned JSON object; everything that measures the run (time, requests,
bytes, retries, whether the cache answered) is under "run", the one field that differs between executors.

Keys, defined here once:
- task id = sha256(record version, command, options, input name): what --resume skips (no request).
- identity = the input's name + size + one of: the object's version id, an ETag that is a content hash
  (an S3 multipart ETag, with its "-N", is not), the Git LFS sha256, or for a local file its device,
  inode, size and mtime_ns (a folder or a shard index: none, as its shards may change without it).
  Without one of those the input is never cached.
- cache key = sha256(identity, statecli version, record version, command, options)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..errors import ExitCode, StatecliError
from ..io import traffic
from ..io.urls import is_remote, redact
from ..vocab import BatchCommand as Command

__all__ = ["RECORD_VERSION", "RUN_FIELD", "Command", "Task", "cache_key", "cached_record", "identity", "run_task",
           "task_id"]

RECORD_VERSION = 1
RUN_FIELD = "run"  # the record's only field that differs between two runs of the same input
_CONTENT_HASH = re.compile(r'^(W/)?"?([0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64})"?$')


@dataclass(frozen=True)
class Task:
    """One checkpoint's work: what every executor ships to its worker."""

    command: Command
    input: str
    options: tuple[tuple[str, Any], ...] = ()  # sorted (name, JSON value): the command's options
    info: tuple[tuple[str, Any], ...] | None = None  # what a listing said about a remote input
    cache_dir: str | None = None
    max_rate: float | None = None  # requests per second in this worker

    @property
    def id(self) -> str:
        return task_id(self.command, self.input, self.options)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def task_id(command: Command, name: str, options: tuple[tuple[str, Any], ...]) -> str:
    return _digest(RECORD_VERSION, str(command), options, name)


def identity(name: str, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What says an input is the same bytes as before (see the module docstring); `content` is None when
    nothing does, and then the input is not cached."""
    if not is_remote(name):
        st = os.stat(name)
        if os.path.isdir(name) or name.endswith(".index.json"):  # its shards may change without it: not cached
            return {"url": name, "size": st.st_size, "content": None}
        return {"url": name, "size": st.st_size, "content": f"local:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"}
    from ..io.source import remote_info

    found = remote_info(name, dict(info) if info is not None else None)
    content = None if name.endswith(".index.json") else _content_id(found)  # its shards may change without it
    return {"url": name, "size": found.get("size"), "content": content}


def _content_id(info: Mapping[str, Any]) -> str | None:
    lfs = info.get("lfs")
    if isinstance(lfs, Mapping) and isinstance(lfs.get("sha256"), str):
        return f"lfs-sha256:{lfs['sha256']}"
    version = info.get("VersionId") or info.get("version_id")
    if isinstance(version, str) and version and version != "null":
        return f"version:{version}"
    etag = info.get("ETag") or info.get("etag")
    if isinstance(etag, str) and (m := _CONTENT_HASH.match(etag.strip())) and not m.group(1):
        return f"etag:{m.group(2).lower()}"  # weak ETags and multipart ones ("...-3") name no content
    return None


def cache_key(ident: Mapping[str, Any], command: Command, options: tuple[tuple[str, Any], ...]) -> str | None:
    if not ident.get("content"):
        return None
    return _digest(ident["url"], ident["size"], ident["content"], __version__, RECORD_VERSION, str(command), options)


def _findings(issues: list[Any]) -> list[dict[str, Any]]:
    return [{"rule": i.rule, "level": str(i.level), "location": i.location, "message": i.message,
             "fingerprint": i.fingerprint, "verdict": str(i.verdict) if i.verdict else None} for i in issues]


def _analyse(task: Task) -> dict[str, Any]:
    """The command's result for one input, as record fields."""
    from .. import api
    from ..analyses.findings import check_issues, scan_issues

    opts = dict(task.options)
    if task.command is Command.SCAN:
        report = api.scan(task.input, strict=bool(opts.get("strict")))
        fmt = next((str(r.format) for r in report.files if r.format), None)
        return {"format": fmt, "verdict": report.verdict.value, "exit_code": int(report.exit_code),
                "findings": _findings(scan_issues(report))}
    if task.command is Command.CHECK:
        result = api.check(task.input, rules=opts.get("rules") or {}, config=opts.get("config"))
        return {"passed": result.passed, "exit_code": int(result.exit_code), "findings": _findings(check_issues(result))}
    if task.command is Command.SIZE:
        size = api.size(task.input, depth=int(opts.get("depth", 1)), top=int(opts.get("top", 10)))
        d = size.to_dict()
        return {"format": d["format"], "exit_code": int(size.exit_code), "summary": d}
    insp = api.inspect(task.input, stats=bool(opts.get("stats")), key=opts.get("key"))
    d = {k: v for k, v in insp.to_dict().items() if k != "entries"}  # the summary; the listing is per file
    return {"format": d["format"], "exit_code": int(insp.exit_code), "summary": d}


def _error(exc: StatecliError) -> dict[str, Any]:
    return {"exit_code": int(exc.exit_code), "error": redact(exc.message)}  # a message may quote a raw URL


def _outcome(task: Task) -> dict[str, Any]:
    """The record's body: the result, or why the checkpoint was refused or unreadable (for a local file as
    much a fact of its bytes as a result, so cached alike)."""
    try:
        return _analyse(task)
    except StatecliError as exc:
        return _error(exc)


def run_task(task: Task) -> dict[str, Any]:
    """Read one checkpoint and return its record; never raises for a bad input (the error is the record)."""
    rec = _run(task, read=True)
    assert rec is not None  # reading, there is always a record
    return rec


def cached_record(task: Task) -> dict[str, Any] | None:
    """The task's record when the cache holds it and finding out costs no request (a local file's stat, or a
    remote input a listing described), else None: the run answers these itself, without a worker's round
    trip (a warm 10,000-object run is 10,000 of them), and sends the rest to its executor. The record is
    run_task's, cached flag and all."""
    if not task.cache_dir or (is_remote(task.input) and task.info is None):
        return None
    return _run(task, read=False)


def _run(task: Task, read: bool) -> dict[str, Any] | None:
    """run_task's body; without `read`, None wherever the cache cannot answer (a miss, an identity error)."""
    traffic.set_max_rate(task.max_rate)
    start = time.perf_counter()
    cached = False
    with traffic.counting() as counters:
        head: dict[str, Any] = {"record_version": RECORD_VERSION, "id": task.id, "command": str(task.command),
                                "input": task.input, "statecli": __version__}
        try:
            ident = identity(task.input, dict(task.info) if task.info is not None else None)
            key = cache_key(ident, task.command, task.options)
            head |= {"identity": ident, "key": key}
            body = _cache_get(task.cache_dir, key)
            cached = body is not None
            if body is None:
                if not read:
                    return None
                body = _outcome(task)
                if "error" not in body or not is_remote(task.input):  # a remote error may be the network's
                    _cache_put(task.cache_dir, key, body)
        except StatecliError as exc:  # the input's identity could not be read (not found, denied)
            body = _error(exc)
        except OSError as exc:
            body = {"exit_code": int(ExitCode.BAD_INPUT), "error": redact(f"{task.input}: {exc.strerror or exc}")}
        except Exception as exc:  # noqa: BLE001 - a bug on one input must not end a 10,000-file run
            body = {"exit_code": int(ExitCode.BAD_INPUT), "error": redact(f"internal error: {type(exc).__name__}: {exc}")}
        if not read and not cached:
            return None  # an identity error: the worker's record says it
    run = {"seconds": round(time.perf_counter() - start, 6), "requests": counters.requests, "bytes": counters.bytes,
           "retries": counters.retries, "waited": round(counters.waited, 6), "cached": cached, "pid": os.getpid()}
    return head | body | {RUN_FIELD: run}


def _cache_path(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, key[:2], key + ".json")


def _cache_get(cache_dir: str | None, key: str | None) -> dict[str, Any] | None:
    if not cache_dir or not key:
        return None
    try:
        with open(_cache_path(cache_dir, key), encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return None  # absent or damaged: read the file again
    return found if isinstance(found, dict) and "exit_code" in found else None


def _cache_put(cache_dir: str | None, key: str | None, body: dict[str, Any]) -> None:
    """Written whole or not at all (temp file + rename): a killed run leaves no half entry."""
    if not cache_dir or not key:
        return
    path = _cache_path(cache_dir, key)
    tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(body, f, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # a cache that cannot be written only costs time
