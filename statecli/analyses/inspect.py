"""What `inspect` reports: the selected entries, shared storages and per kind/dtype/device totals."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..state import KINDS, Checkpoint, Entry, Stats, unique_storage_bytes


@dataclass(frozen=True)
class Bucket:
    key: str
    tensors: int
    numel: int
    nbytes: int  # distinct storage bytes: shared storage counted once


@dataclass(frozen=True)
class SharedStorage:
    storage: str
    names: tuple[str, ...]
    nbytes: int


@dataclass
class InspectResult:
    checkpoint: Checkpoint
    entries: list[Entry]
    by_kind: list[Bucket]
    by_dtype: list[Bucket]
    by_device: list[Bucket]
    shared: list[SharedStorage]
    total: Bucket
    view_nbytes: int
    stats: dict[str, Stats] = field(default_factory=dict)
    model: Any = None  # modeldef.ModelInfo when classified against a model definition
    load_report: Any = None  # list[modeldef.ReportLine]


def select(ck: Checkpoint, kinds: tuple[str, ...] = (), pattern: str | None = None) -> list[Entry]:
    for k in kinds:
        if k not in KINDS:
            raise UsageError(None, f"unknown --kind {k!r}", f"choose from: {', '.join(KINDS)}")
    try:
        rx = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise UsageError(None, f"--filter {pattern!r} is not a valid regular expression: {exc}") from exc
    out = []
    for e in ck.entries:
        if kinds and e.kind not in kinds:
            continue
        if rx and not rx.search(e.name):
            continue
        out.append(e)
    return out


def bucket(key: str, entries: list[Entry]) -> Bucket:
    tensors = [e for e in entries if e.tensor is not None]
    return Bucket(key, len(tensors), sum(e.tensor.numel for e in tensors if e.tensor),
                  unique_storage_bytes(tensors)[1])


def group_by(entries: list[Entry], attr: str) -> list[Bucket]:
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        if e.tensor is None:
            continue
        key = e.kind if attr == "kind" else getattr(e.tensor, attr)
        groups.setdefault(key, []).append(e)
    return sorted((bucket(k, v) for k, v in groups.items()), key=lambda b: (-b.nbytes, b.key))


def shared_storages(entries: list[Entry]) -> list[SharedStorage]:
    groups: dict[tuple[str | None, str], list[Entry]] = {}
    for e in entries:
        t = e.tensor
        if t is not None and t.storage_key is not None and t.device != "meta":
            groups.setdefault((t.source, t.storage_key), []).append(e)
    out = []
    for (_, key), es in groups.items():
        if len(es) > 1:
            t = es[0].tensor
            assert t is not None
            out.append(SharedStorage(key, tuple(e.name for e in es),
                                     t.storage_nbytes if t.storage_nbytes is not None else t.nbytes))
    return out


def summarize(ck: Checkpoint, kinds: tuple[str, ...] = (), pattern: str | None = None) -> InspectResult:
    entries = select(ck, kinds, pattern)
    view, _ = unique_storage_bytes(entries)
    return InspectResult(
        checkpoint=ck, entries=entries,
        by_kind=group_by(entries, "kind"), by_dtype=group_by(entries, "dtype"),
        by_device=group_by(entries, "device"), shared=shared_storages(entries),
        total=bucket("total", entries), view_nbytes=view,
    )
