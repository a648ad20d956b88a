"""What `inspect` reports: the selected entries, shared storages and per kind/dtype/device totals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import ExitCode, UsageError, user_regex
from ..io.stdin import shown_files, shown_path
from ..state import KINDS, SCHEMA_VERSION, Checkpoint, Entry, Kind, Stats, gc_paused
from ..storage import shared_storages, storage_bytes, unique_storage_bytes
from ..units import fmt_shape
from .gguf_view import gguf_view
from .module_tree import ModuleTree, build_tree
from .quantized import QuantSummary, quant_summary

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
    quant: QuantSummary | None = None  # bits per weight, where weights are quantized
    storage: bool = False  # the human view lists a quantized weight's stored parts under it
    gguf: Any = None  # gguf_view.GgufView of a GGUF: header, metadata, totals by GGML type and block

    def module_tree(self) -> ModuleTree:
        """The selected tensors by module (`--tree`, the HTML page): its root totals are `total`."""
        ck = self.checkpoint
        return build_tree([e for e in self.entries if e.tensor is not None], ck.container_name,
                          {m.path: m.class_name for m in ck.modules})

    @property
    def loads_strictly(self) -> bool:
        return not any(x.blocking for x in self.load_report)

    @property
    def exit_code(self) -> ExitCode:
        fails = self.model is not None and self.model_explicit and not self.loads_strictly
        return ExitCode.DIFFERENT if fails else ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        ck = self.checkpoint
        d = {
            "schema_version": SCHEMA_VERSION,
            "path": shown_path(ck),
            "format": str(ck.format),
            "container": ck.container,
            "containers": [c.to_dict() for c in ck.containers],
            "files": shown_files(ck),
            "metadata": dict(ck.metadata),
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
            "entries": _entry_dicts(self.entries, self.stats),
        }
        if self.quant is not None:
            d["quantization"] = self.quant.to_dict()
        if self.gguf is not None:
            d["gguf"] = self.gguf.to_dict()
        if self.tree:
            d["tree"] = [{"module": n.path or ck.container_name, "tensors": n.tensors, "numel": n.numel,
                          "nbytes": n.nbytes} for n in self.module_tree().walk()]
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
        return f"# {shown_path(self.checkpoint)} ({self.checkpoint.format})"

    def md_tables(self) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
        kinds = [{"kind": b.key, "tensors": b.tensors, "numel": b.numel, "bytes": b.nbytes} for b in self.by_kind]
        return [(("kind", "tensors", "numel", "bytes"), kinds)]

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per entry (CSV/Markdown): shape as text, a value's type in the dtype column."""
        with gc_paused():
            return self._rows()

    def _rows(self) -> list[dict[str, Any]]:
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


def _entry_dicts(entries: tuple[Entry, ...], stats: Mapping[str, Stats]) -> list[dict[str, Any]]:
    with gc_paused():  # 50,000 dicts at once: see state.gc_paused
        if not stats:
            return [e.to_dict() for e in entries]
        return [e.to_dict(stats.get(e.name)) for e in entries]


def select(ck: Checkpoint, kinds: tuple[str, ...] = (), pattern: str | None = None) -> list[Entry]:
    for k in kinds:
        if k not in KINDS:
            raise UsageError(None, f"unknown --kind {k!r}", f"choose from: {', '.join(KINDS)}")
    rx = user_regex(pattern, "--filter") if pattern else None
    wanted = {Kind(k) for k in kinds}
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


@dataclass(frozen=True)
class Summary:
    """Totals by kind, dtype and device, each counting a shared storage once per bucket (as
    `bucket` would), the overall total, bytes as views and the shared storages."""

    by_kind: tuple[Bucket, ...]
    by_dtype: tuple[Bucket, ...]
    by_device: tuple[Bucket, ...]
    total: Bucket
    view_nbytes: int
    shared: tuple[SharedStorage, ...]


def summarize(entries: list[Entry] | tuple[Entry, ...]) -> Summary:
    """Every total of `inspect` and `size` in two passes over the entries: a storage that only one
    tensor uses adds its bytes straight to that tensor's buckets; the few shared storages are then
    settled bucket by bucket (the largest view of each, as unique_storage_bytes counts them)."""
    shared = shared_storages(entries)
    # (kind, dtype, device) -> [tensors, numel, bytes of unshared and anonymous storage]
    combos: dict[tuple[Kind, str, str], list[int]] = {}
    view = 0
    for e in entries:
        t = e.tensor
        if t is None:
            continue
        nbytes = t.nbytes
        view += nbytes
        acc = combos.get((e.kind, t.dtype, t.device))
        if acc is None:
            acc = combos[(e.kind, t.dtype, t.device)] = [0, 0, 0]
        acc[0] += 1
        acc[1] += t.numel
        if not shared or t.storage_id not in shared:
            acc[2] += storage_bytes(t)
    sums: list[dict[Any, list[int]]] = [{}, {}, {}, {}]  # by kind, dtype, device; total
    for combo, (n, numel, nbytes) in combos.items():
        for i, key in enumerate((*combo, "total")):
            acc = sums[i].setdefault(key, [0, 0, 0])
            acc[0] += n
            acc[1] += numel
            acc[2] += nbytes
    for es in shared.values():
        for i in range(4):
            largest: dict[Any, int] = {}
            for e in es:
                t = e.tensor
                assert t is not None
                key = "total" if i == 3 else (e.kind, t.dtype, t.device)[i]
                size = t.storage_size
                largest[key] = max(largest.get(key, 0), size)
            for key, size in largest.items():
                sums[i][key][2] += size

    def buckets(i: int) -> tuple[Bucket, ...]:
        return tuple(sorted((Bucket(k, *v) for k, v in sums[i].items()), key=lambda b: (-b.nbytes, b.key)))

    total = Bucket("total", *sums[3].get("total", [0, 0, 0]))
    out = []
    for k, es in shared.items():  # in order of each storage's first tensor
        t = es[0].tensor
        assert t is not None
        out.append(SharedStorage(k[1], tuple(e.name for e in es),
                                 t.storage_size))
    return Summary(buckets(0), buckets(1), buckets(2), total, view, tuple(out))


def inspect(ck: Checkpoint, kinds: tuple[str, ...] = (), pattern: str | None = None, *, stats: bool = False,
            model: Any = None, model_explicit: bool = False, tree: bool = False, storage: bool = False,
            all_metadata: bool = False, exact: bool = False) -> InspectResult:
    """Select entries by kind and name, total them, and (with `model`) classify them against the model
    definition and report what load_state_dict(strict=True) would say; `stats` reads tensor values
    (`exact`: percentiles and histograms from every value, not a random sample)."""
    report: tuple[Any, ...] = ()
    if model is not None:
        from ..classify import with_model
        from ..modeldef import load_report_notes

        ck = with_model(ck, model)
        lines, notes = load_report_notes(ck, model)
        ck, report = ck.with_notes(notes), tuple(lines)
    with gc_paused():
        entries = select(ck, kinds, pattern)
        s = summarize(entries)
    values: Mapping[str, Stats] = MappingProxyType({})
    if stats:
        from .stats_pass import stats_for

        values = MappingProxyType(stats_for(ck, entries, exact=exact))
    return InspectResult(
        checkpoint=ck, entries=tuple(entries),
        by_kind=s.by_kind, by_dtype=s.by_dtype, by_device=s.by_device, shared=s.shared,
        total=s.total, view_nbytes=s.view_nbytes, stats=values,
        model=model, load_report=report, model_explicit=model_explicit, tree=tree,
        quant=quant_summary(ck.entries), storage=storage, gguf=gguf_view(ck, all_metadata),
    )
