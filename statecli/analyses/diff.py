"""`statecli diff`: structure and values of two checkpoints, compared one tensor pair at a time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from ..errors import ExitCode, UsageError
from ..io.stdin import shown_path
from ..notes import Note, NoteKind
from ..qtensor import dequantized_by
from ..state import SCHEMA_VERSION, Checkpoint, DiffStatus, Entry, TensorInfo
from ..units import plural
from ..vocab import Layout, SortOrder
from . import onnx_pairs
from .changes import AUTO, MODULE_COLUMNS, SORTS, ChangeFigures, ModuleChange, Sums, jsonable, sort_modules
from .compare import Partial
from .compare_torch import _compare_pair
from .diff_keys import KeyCheck, placed, precision_hint, prefix_hint, restore_aliases, shared_groups, sharing_notes
from .diff_keys import Work as _Work  # the value pass below fills these in
from .diff_keys import add_note as _add_note
from .gguf_view import align_names, metadata_changes, quant_error
from .module_tree import ModuleTree, build_tree, level

EQUAL, ADDED, REMOVED, CHANGED = DiffStatus.EQUAL, DiffStatus.ADDED, DiffStatus.REMOVED, DiffStatus.CHANGED
FOLDED = DiffStatus.FOLDED
NP_CHUNK = 1 << 20  # elements per read + compare task of the numpy path (a few MiB per side per worker)


@dataclass(frozen=True)
class KeyDiff(ChangeFigures):
    name: str
    status: DiffStatus
    changes: Mapping[str, tuple[Any, Any]]
    max_abs: float | None = None
    max_rel: float | None = None
    mismatched: int | None = None
    numel: int | None = None
    compared_as: str | None = None
    note: str | None = None
    sums: Sums | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "status": str(self.status)}
        if self.changes:
            d["changes"] = {f: {"a": jsonable(a), "b": jsonable(b)} for f, (a, b) in self.changes.items()}
        if self.max_abs is not None:
            d.update(max_abs=jsonable(self.max_abs), max_rel=jsonable(self.max_rel), mismatched=self.mismatched,
                     numel=self.numel)
        if self.sums is not None:
            d.update(rel_change=jsonable(self.rel_change), cosine=self.cosine, nmse=jsonable(self.nmse),
                     snr_db=jsonable(self.snr_db))
        if self.compared_as:
            d["compared_as"] = self.compared_as
        if self.note:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class DiffResult:
    a: Checkpoint
    b: Checkpoint
    keys: tuple[KeyDiff, ...]
    rtol: float
    atol: float
    equal_nan: bool
    values: bool
    renames: tuple[str, ...] = ()
    only_changed: bool = False  # listings leave equal keys out
    left_out: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # containers of A and B not compared (no --all)
    ignore_dtype: bool = False
    modules: tuple[ModuleChange, ...] = ()  # values compared by module, in `sort` order
    depth: int = 1
    by_module: bool = False  # the view (and CSV rows) by module instead of by key
    sort: SortOrder = SortOrder.ORDER
    notes: tuple[Note, ...] = ()  # what was compared as the same although stored differently (aliases, sharing)
    strict_sharing: bool = False
    metadata: tuple[Any, ...] = ()  # gguf_view.MetaChange: metadata keys two GGUFs differ in
    gguf_reference: bool = False  # a GGUF against another format: quantization error per tensor and block
    # a GGUF tensor transformers rebuilt (q/k rows permuted, experts split): the GGML type it was stored in
    built_types: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def quantized(self) -> bool:
        """Either side holds quantized weights: their values were compared dequantized (SNR matters)."""
        return any(e.tensor is not None and e.tensor.quant is not None for ck in (self.a, self.b) for e in ck.entries)
    entries: tuple[Entry, ...] = ()  # what was compared, each at its key (`placed`), in key order

    @cached_property
    def quantization_error(self) -> dict[str, Any]:
        """A GGUF against its reference: NMSE/SNR per tensor, and per block over the quantized tensors."""
        types = {e.name: e.tensor.dtype for ck in (self.a, self.b) for e in ck.entries
                 if e.group == "" and e.tensor is not None and e.tensor.quant is not None}
        return quant_error(self.keys, {**self.built_types, **types})

    @cached_property
    def tree(self) -> ModuleTree:
        """Every compared key by module, the comparison as its overlay (the HTML page's tree)."""
        return build_tree(self.entries, compared=self.by_name)  # ROOT: A's and B's containers may differ

    @cached_property
    def by_name(self) -> Mapping[str, KeyDiff]:
        return MappingProxyType({k.name: k for k in self.keys})

    @property
    def columns(self) -> tuple[str, ...]:
        if self.by_module:
            return MODULE_COLUMNS
        return ("name", "status", "changes", "max_abs", "max_rel", "mismatched", "rel_change", "cosine", "note")

    @property
    def equal(self) -> bool:
        return not self.metadata and all(k.status == EQUAL for k in self.keys)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.equal else ExitCode.DIFFERENT

    def count(self, status: DiffStatus) -> int:
        return sum(1 for k in self.keys if k.status == status)

    @property
    def listed(self) -> tuple[KeyDiff, ...]:
        return tuple(k for k in self.keys if not (self.only_changed and k.status == EQUAL))

    @property
    def summary_line(self) -> str:
        if self.equal:
            how = f"values allclose (rtol={self.rtol:g}, atol={self.atol:g})" if self.values else "structure only"
            return f"equal: {plural(self.count(EQUAL), 'key')}, {how}"
        meta = f", {plural(len(self.metadata), 'metadata key')} differ" if self.metadata else ""
        folded = f"{self.count(FOLDED)} folded by the exporter, " if self.count(FOLDED) else ""
        return (f"different: {self.count(REMOVED)} removed, {self.count(ADDED)} added, {self.count(CHANGED)} changed, "
                f"{folded}{self.count(EQUAL)} equal{meta}")

    @property
    def md_title(self) -> str:
        return f"**{self.summary_line}**"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "a": {"path": shown_path(self.a), "format": str(self.a.format), "container": self.a.container,
                  "left_out": list(self.left_out[0])},
            "b": {"path": shown_path(self.b), "format": str(self.b.format), "container": self.b.container,
                  "left_out": list(self.left_out[1])},
            "equal": self.equal,
            "tolerance": {"rtol": self.rtol, "atol": self.atol, "equal_nan": self.equal_nan,
                          "values_compared": self.values, "ignore_dtype": self.ignore_dtype},
            "summary": {str(s): self.count(s) for s in (REMOVED, ADDED, CHANGED, EQUAL)},
            "hints": list(self.renames),
            "notes": [n.text for n in self.notes],
            "strict_sharing": self.strict_sharing,
            "keys": [k.to_dict() for k in self.listed],
            "module_depth": self.depth,
            "module_sort": self.sort,
            "modules": [m.to_dict() for m in self.modules],
        } | ({"metadata": [m.to_dict() for m in self.metadata]} if self.metadata else {}) | (
            {"quantization_error": self.quantization_error} if self.gguf_reference else {})

    def rows(self) -> list[dict[str, Any]]:
        if self.by_module:
            return [m.to_dict() for m in self.modules]
        out = []
        for k in self.listed:
            d = k.to_dict()
            ch = "; ".join(f"{f}: {v['a']} -> {v['b']}" for f, v in d.get("changes", {}).items())
            out.append({"name": d["name"], "status": d["status"], "changes": ch, "max_abs": d.get("max_abs", ""),
                        "max_rel": d.get("max_rel", ""), "mismatched": d.get("mismatched", ""),
                        "rel_change": d.get("rel_change", ""), "cosine": d.get("cosine", ""),
                        "note": d.get("note", "")})
        return out


def _key(e: Entry) -> str:
    return e.name


def diff(a: Checkpoint, b: Checkpoint, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False,
         values: bool = True, progress: Callable[[int, int], None] | None = None,
         everything: bool = False, only_changed: bool = False, ignore_dtype: bool = False, depth: int = 1,
         by_module: bool = False, sort: SortOrder | str = SortOrder.ORDER, strict_sharing: bool = False) -> DiffResult:
    """Compare the model states of `a` and `b` (with `everything`, every container: optimizer, ...).
    With `ignore_dtype`, a dtype difference alone is no change: values are compared in the common
    dtype within the tolerance (a float16 export against its float32 source). The per-module figures
    (`depth` name components, ordered by `sort`) come from the same pass over the values.
    A key one side leaves out but records as a tie (`modeldef.ties`) is compared as the tensor it names.
    Storage sharing (ties, views) that differs is a note, not a difference, unless `strict_sharing`."""
    sort = _sort_order(sort)
    a, b, renaming, built_types = align_names(a, b)  # a GGUF against another format: HF names
    pairing = onnx_pairs.pair(a, b)  # an ONNX export against its checkpoint: renamed initializers paired
    if pairing is not None:
        a, b = pairing.a, pairing.b
    ea, eb = _by_key(a, everything), _by_key(b, everything)
    stored_a, stored_b = list(ea.values()), list(eb.values())  # before either side's aliases join
    aliases = {"A": restore_aliases(a, ea, stored_b), "B": restore_aliases(b, eb, stored_a)}
    only_a = [n for n in ea if n not in eb]
    only_b = [n for n in eb if n not in ea]
    # Sharing over every entry (an EMA or optimizer tensor on a model tensor's storage counts too),
    # with the restored aliases on their targets' storage.
    check = KeyCheck(aliases, shared_groups([*a.entries, *(ea[n] for n in aliases["A"])]),
                      shared_groups([*b.entries, *(eb[n] for n in aliases["B"])]), ignore_dtype, strict_sharing)
    folded = pairing.folded if pairing is not None else frozenset()
    keys = [_Work(n, FOLDED if n in folded else REMOVED) for n in only_a]
    keys += [_Work(n, FOLDED if n in folded else ADDED) for n in only_b]
    pairs: list[tuple[_Work, TensorInfo, TensorInfo]] = []
    for n in [n for n in ea if n in eb]:
        kd, x, y = check.key(n, ea[n], eb[n]), ea[n].tensor, eb[n].tensor
        if pairing is not None and n in pairing.how:
            _add_note(kd, f"matched {pairing.how[n]}")
        keys.append(kd)
        if values and x is not None and y is not None and "shape" not in kd.changes:
            pairs.append((kd, x, y))
    if pairs:
        _compare_values(a, b, pairs, rtol, atol, equal_nan, progress, renaming is not None)
    order = {n: i for i, n in enumerate(list(ea) + only_b)}
    keys.sort(key=lambda k: order.get(k.name, 0))
    frozen = tuple(KeyDiff(**{**vars(k), "changes": MappingProxyType(k.changes)}) for k in keys)
    left_out = ((), ()) if everything else (_groups(a), _groups(b))
    hints = prefix_hint(only_a, only_b) + precision_hint(keys, ea, eb, rtol, atol)
    compared = tuple(placed(e) for e in [*ea.values(), *(eb[n] for n in only_b)])  # the keys' order
    return DiffResult(a, b, frozen, rtol, atol, equal_nan, values, tuple(hints), only_changed, left_out, ignore_dtype,
                      _modules(compared, frozen, depth, sort), depth, by_module, sort,
                      tuple(sharing_notes(aliases, check.sharing))
                      + ((Note(NoteKind.COMPARISON, renaming),) if renaming else ()), strict_sharing,
                      metadata=metadata_changes(a, b), gguf_reference=renaming is not None, entries=compared,
                      built_types=MappingProxyType(built_types))


def _sort_order(sort: SortOrder | str) -> SortOrder:
    try:
        return SortOrder(sort)
    except ValueError:
        raise UsageError(None, f"unknown --sort {sort!r}", f"choose from: {', '.join(SORTS)}") from None


def _by_key(ck: Checkpoint, everything: bool) -> dict[str, Entry]:
    """The entries compared, by key: the model state's (with `everything`, every container's)."""
    return {_key(e): e for e in ck.entries if everything or e.group == ""}


def _modules(compared: tuple[Entry, ...], keys: tuple[KeyDiff, ...], depth: int, sort: SortOrder) -> tuple[ModuleChange, ...]:
    """The per-module rows: the module tree's level (`depth`, 0 by block) with the keys as its overlay."""
    rows = level(compared, depth or AUTO, {k.name: k for k in keys})
    return sort_modules(tuple(r.change for r in rows if r.change is not None), sort)


def _groups(ck: Checkpoint) -> tuple[str, ...]:
    return tuple(sorted({e.group for e in ck.entries if e.group}))


def _compare_values(a: Checkpoint, b: Checkpoint, pairs: list[tuple[_Work, TensorInfo, TensorInfo]], rtol: float,
                    atol: float, equal_nan: bool, progress: Callable[[int, int], None] | None, hf: bool = False) -> None:
    """Every pair's figures, read through each format's `values` hook. The pairs numpy reads as plain bytes
    of local files go as one queue of byte-range tasks that span pairs (compare_pool.py); the rest one pair
    at a time: numpy's read_flat, or torch (imported only then) for complex, DCP and torch-only dtypes."""
    import importlib.util
    from copy import copy

    from ..formats.registry import values_of
    from .compare_pool import batched

    torch_here = importlib.util.find_spec("torch") is not None
    with values_of(a, hf) as ra, values_of(b, hf) as rb:
        def by_numpy(x: TensorInfo, y: TensorInfo) -> bool:
            # Complex |a-b|: numpy's hypot and torch's abs differ in the last bit, so torch compares those
            # where it is installed; the core install (no torch) compares them with numpy.
            complex_pair = _complex(x.dtype) or _complex(y.dtype)
            return ra.reads_numpy(x) and rb.reads_numpy(y) and not (complex_pair and torch_here)

        todo, copies = _distinct(pairs, by_numpy)
        totals = batched(ra, rb, [(i, pairs[i][1], pairs[i][2]) for i in todo if by_numpy(pairs[i][1], pairs[i][2])],
                         rtol, atol, equal_nan)
        firsts: dict[int, _Work] = {}
        for n, i in enumerate(todo):
            if progress:
                progress(n, len(todo))
            kd, x, y = pairs[i]
            note, kd.note = kd.note, None
            if i in totals:
                _figures(kd, x.dtype, y.dtype, totals[i])
            else:
                try:
                    (_compare_numpy if by_numpy(x, y) else _compare_torch)(kd, x, y, ra, rb, rtol, atol, equal_nan)
                finally:
                    ra.release(x)
                    rb.release(y)
            firsts[i] = copy(kd)  # the figures and the value note only (the key's own note is put back below)
            kd.note = "; ".join(x for x in (note, kd.note) if x) or None
            if kd.mismatched:
                kd.status = CHANGED
        for i, j in copies:  # a pair of views compared before (a tie, an alias): its figures
            _copy_figures(firsts[j], pairs[i][0])
        if progress:
            progress(len(pairs), len(pairs))


def _distinct(pairs: list[tuple[_Work, TensorInfo, TensorInfo]], by_numpy: Callable[[TensorInfo, TensorInfo], bool],
              ) -> tuple[list[int], list[tuple[int, int]]]:
    """The pairs to compare, and (pair, earlier pair) for those whose two views were compared before;
    tensors statecli does not read get a note here (a quantized tensor is read when its reader dequantizes it)."""
    first: dict[tuple[Any, ...], int] = {}
    todo: list[int] = []
    copies: list[tuple[int, int]] = []
    for i, (kd, x, y) in enumerate(pairs):
        strided = x.layout == Layout.STRIDED and y.layout == Layout.STRIDED
        if not (strided or by_numpy(x, y)) or "meta" in (x.device, y.device):
            _add_note(kd, f"values of {x.layout}/{x.device} tensors not compared")
            continue
        same = (_view(x), _view(y)) if x.storage_key is not None and y.storage_key is not None else None
        if same is not None and same in first:
            copies.append((i, first[same]))
            continue
        if same is not None:
            first[same] = i
        todo.append(i)
    return todo, copies


def _view(t: TensorInfo) -> tuple[Any, ...]:
    return (t.source, t.storage_key, t.storage_offset, t.shape, t.stride, t.dtype)


def _copy_figures(src: _Work, kd: _Work) -> None:
    kd.max_abs, kd.max_rel, kd.mismatched, kd.compared_as, kd.sums = (src.max_abs, src.max_rel, src.mismatched,
                                                                      src.compared_as, src.sums)
    if src.note:
        _add_note(kd, src.note)
    if kd.mismatched:
        kd.status = CHANGED


def _complex(dtype: str) -> bool:
    return dtype.startswith("complex")


def _compare_numpy(kd: _Work, x: TensorInfo, y: TensorInfo, ra: Any, rb: Any, rtol: float, atol: float,
                   equal_nan: bool) -> None:
    """A pair read through read_flat (remote, dequantized, views): chunks compared on both cores, in order."""
    from ..io.values import ordered_map
    from .compare import compare_chunk

    # a quantized tensor its format's reader dequantizes compares as the float32 values it reads as
    dx, dy = ("float32" if dequantized_by(r, t) else t.dtype for r, t in ((ra, x), (rb, y)))

    def one(lo: int, hi: int) -> Partial:
        return compare_chunk(ra.read_flat(x, lo, hi, 0), rb.read_flat(y, lo, hi, 1), dx, dy, rtol, atol, equal_nan)

    total = Partial()
    for part in ordered_map(one, x.numel, NP_CHUNK):
        total.merge(part)
    _figures(kd, dx, dy, total)


def _figures(kd: _Work, dx: str, dy: str, total: Partial) -> None:
    """A pair's merged figures (values read as dtypes dx, dy) into its work record."""
    from .compare import promote, work_dtype

    if dx != dy:
        kd.compared_as = promote(dx, dy)
    kd.max_abs, kd.max_rel, kd.mismatched = total.max_abs, total.max_rel, total.bad
    # Norms of integer tensors (step counters, masks, ids) would swamp a module's weights: floats only.
    kd.sums = total.sums if work_dtype(promote(dx, dy)) != "int64" else None
    if total.nonfinite_bad:
        _add_note(kd, f"{total.nonfinite_bad} element(s) differ by NaN or Inf (not counted in max_abs)")


def _compare_torch(kd: _Work, x: TensorInfo, y: TensorInfo, ra: Any, rb: Any, rtol: float, atol: float,
                   equal_nan: bool) -> None:
    import torch

    def done(lo: int, hi: int) -> None:
        ra.release_elements(x, lo, hi)  # contiguous tensors: drop each chunk's pages
        rb.release_elements(y, lo, hi)

    _compare_pair(kd, ra.tensor(x), rb.tensor(y), rtol, atol, equal_nan, torch, done)
