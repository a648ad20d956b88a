"""What `inspect` reports: the selected entries, shared storages and per kind/dtype/device totals."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import UsageError
from ..state import KINDS, SCHEMA_VERSION, Checkpoint, Entry, Kind, Stats, unique_storage_bytes
from ..units import fmt_shape

# The columns of `inspect --format csv|md`, in order; `stats` columns follow when values were read.
COLUMNS = ("name", "group", "kind", "evidence", "dtype", "shape", "numel", "nbytes", "device", "layout", "storage")
STAT_COLUMNS = ("min", "max", "mean", "std", "nan", "inf")


@dataclass(frozen=True)
class Bucket:
    key: str
    tensors: int
    numel: int
    nbytes: int  # distinct storage bytes: shared storage counted once

    def to_dict(self) -> dict[str, Any]:
        return {"tensors": self.tensors, "numel": self.numel, "nbytes": self.nbytes}


@dataclass(frozen=True)
class SharedStorage:
    storage: str
    names: tuple[str, ...]
    nbytes: int


@dataclass(frozen=True)
class InspectResult:
    checkpoint: Checkpoint
    entries: tuple[Entry, ...]
    by_kind: tuple[Bucket, ...]
    by_dtype: tuple[Bucket, ...]
    by_device: tuple[Bucket, ...]
    shared: tuple[SharedStorage, ...]
    total: Bucket
    view_nbytes: int
    stats: Mapping[str, Stats] = field(default_factory=lambda: MappingProxyType({}))
    model: Any = None  # modeldef.ModelInfo when classified against a model definition
    load_report: tuple[Any, ...] = ()  # modeldef.ReportLine
    model_explicit: bool = False  # --model/--hf-config given: a failing load report is the result (exit 1)
    tree: bool = False  # the human view: module tree instead of tables

    @property
    def loads_strictly(self) -> bool:
        return not any(x.blocking for x in self.load_report)

    @property
    def exit_code(self) -> int:
        return 1 if self.model is not None and self.model_explicit and not self.loads_strictly else 0

    def to_dict(self) -> dict[str, Any]:
        ck = self.checkpoint
        d = {
            "schema_version": SCHEMA_VERSION,
            "path": ck.path,
            "format": str(ck.format),
            "container": ck.container,
            "containers": [c.to_dict() for c in ck.containers],
            "files": ck.files,
            "metadata": ck.metadata,
            "warnings": ck.warnings,
            "notes": ck.notes,
            "unsafe_globals": ck.unsafe_globals,
            "summary": {
                "total": self.total.to_dict() | {"view_nbytes": self.view_nbytes},
                "by_kind": {b.key: b.to_dict() for b in self.by_kind},
                "by_dtype": {b.key: b.to_dict() for b in self.by_dtype},
                "by_device": {b.key: b.to_dict() for b in self.by_device},
                "shared": [{"storage": s.storage, "names": list(s.names), "nbytes": s.nbytes} for s in self.shared],
            },
            "entries": [e.to_dict(self.stats.get(e.name)) for e in self.entries],
        }
        if self.model is not None:
            d["model"] = self.model.to_dict()
            d["load_report"] = [x.to_dict() for x in self.load_report]
            # loads_strictly: the model's own loader accepts the file (from_pretrained for a Hugging Face
            # model); loads_with_strict_load_state_dict: plain load_state_dict(strict=True) would too.
            d["loads_strictly"] = self.loads_strictly
            d["loads_with_strict_load_state_dict"] = not any(x.fails_strict for x in self.load_report)
        return d

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS + (STAT_COLUMNS if self.stats else ())

    @property
    def md_title(self) -> str:
        return f"# {self.checkpoint.path} ({self.checkpoint.format})"

    def md_tables(self) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
        kinds = [{"kind": b.key, "tensors": b.tensors, "numel": b.numel, "bytes": b.nbytes} for b in self.by_kind]
        return [(("kind", "tensors", "numel", "bytes"), kinds)]

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per entry (CSV/Markdown): shape as text, a value's type in the dtype column."""
        out = []
        for e in self.entries:
            d = e.to_dict(self.stats.get(e.name))
            row = {c: d.get(c) for c in COLUMNS}
            row["shape"] = fmt_shape(d["shape"]) if d["shape"] is not None else None
            if d["dtype"] is None:
                row["dtype"] = d.get("type")
            if self.stats:
                st = d.get("stats") or {}
                row |= {c: st.get(c) for c in STAT_COLUMNS}
            out.append(row)
        return out


def select(ck: Checkpoint, kinds: tuple[str, ...] = (), pattern: str | None = None) -> list[Entry]:
    for k in kinds:
        if k not in KINDS:
            raise UsageError(None, f"unknown --kind {k!r}", f"choose from: {', '.join(KINDS)}")
    try:
        rx = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise UsageError(None, f"--filter {pattern!r} is not a valid regular expression: {exc}") from exc
    wanted = set(kinds)
    if Kind.BUFFER in wanted:  # "buffer" means every buffer; 'buffer (non-persistent)' only those
        wanted.add(Kind.BUFFER_NP)
    out = []
    for e in ck.entries:
        if wanted and e.kind not in wanted:
            continue
        if rx and not rx.search(e.name):
            continue
        out.append(e)
    return out


def bucket(key: str, entries: list[Entry]) -> Bucket:
    tensors = [e for e in entries if e.tensor is not None]
    return Bucket(key, len(tensors), sum(e.tensor.numel for e in tensors if e.tensor),
                  unique_storage_bytes(tensors)[1])


def group_by(entries: list[Entry], attr: str) -> tuple[Bucket, ...]:
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        if e.tensor is None:
            continue
        key = e.kind if attr == "kind" else getattr(e.tensor, attr)
        groups.setdefault(key, []).append(e)
    return tuple(sorted((bucket(k, v) for k, v in groups.items()), key=lambda b: (-b.nbytes, b.key)))


def shared_storages(entries: list[Entry]) -> tuple[SharedStorage, ...]:
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
    return tuple(out)


def inspect(ck: Checkpoint, kinds: tuple[str, ...] = (), pattern: str | None = None, *, stats: bool = False,
            model: Any = None, model_explicit: bool = False, tree: bool = False) -> InspectResult:
    """Select entries by kind and name, total them, and (with `model`) classify them against the model
    definition and report what load_state_dict(strict=True) would say; `stats` reads tensor values."""
    report: tuple[Any, ...] = ()
    if model is not None:
        from ..classify import with_model
        from ..modeldef import load_report

        ck = with_model(ck, model)
        report = tuple(load_report(ck, model))
    entries = select(ck, kinds, pattern)
    values: Mapping[str, Stats] = MappingProxyType({})
    if stats:
        from .stats import stats_for

        values = MappingProxyType(stats_for(ck, entries))
    view, _ = unique_storage_bytes(entries)
    return InspectResult(
        checkpoint=ck, entries=tuple(entries),
        by_kind=group_by(entries, "kind"), by_dtype=group_by(entries, "dtype"),
        by_device=group_by(entries, "device"), shared=shared_storages(entries),
        total=bucket("total", entries), view_nbytes=view, stats=values,
        model=model, load_report=report, model_explicit=model_explicit, tree=tree,
    )
