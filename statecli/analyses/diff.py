"""`statecli diff`: structure and values of two checkpoints, compared one tensor pair at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import ExitCode, UsageError
from ..modeldef.ties import Alias, alias_entry, recorded_aliases
from ..state import SCHEMA_VERSION, Checkpoint, DiffStatus, Entry, TensorInfo, prefix_matches
from ..storage import shared_storages
from ..units import plural
from ..vocab import Layout, SortOrder
from . import onnx_pairs
from .changes import AUTO, MODULE_COLUMNS, SORTS, ChangeFigures, ModuleChange, Sums, jsonable, module_changes, sort_modules
from .compare_torch import _compare_pair

EQUAL, ADDED, REMOVED, CHANGED = DiffStatus.EQUAL, DiffStatus.ADDED, DiffStatus.REMOVED, DiffStatus.CHANGED
FOLDED = DiffStatus.FOLDED
NP_CHUNK = 1 << 20  # elements per read + compare task of the numpy path (a few MiB per side per worker)


@dataclass
class _Work:
    """A key's comparison while it is being made (values fill in tensor by tensor)."""

    name: str
    status: DiffStatus
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (a, b)
    max_abs: float | None = None
    max_rel: float | None = None
    mismatched: int | None = None
    numel: int | None = None
    compared_as: str | None = None  # the common dtype when the two dtypes differ
    note: str | None = None
    sums: Sums | None = None  # float64 sums over the elements finite in both, for the per-module view


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
    notes: tuple[str, ...] = ()  # what was compared as the same although stored differently (aliases, sharing)
    strict_sharing: bool = False

    @property
    def quantized(self) -> bool:
        """Either side holds quantized weights: their values were compared dequantized (SNR matters)."""
        return any(e.tensor is not None and e.tensor.quant is not None for ck in (self.a, self.b) for e in ck.entries)

    @property
    def columns(self) -> tuple[str, ...]:
        if self.by_module:
            return MODULE_COLUMNS
        return ("name", "status", "changes", "max_abs", "max_rel", "mismatched", "note")

    @property
    def equal(self) -> bool:
        return all(k.status == EQUAL for k in self.keys)

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
        folded = f"{self.count(FOLDED)} folded by the exporter, " if self.count(FOLDED) else ""
        return (f"different: {self.count(REMOVED)} removed, {self.count(ADDED)} added, {self.count(CHANGED)} changed, "
                f"{folded}{self.count(EQUAL)} equal")

    @property
    def md_title(self) -> str:
        return f"**{self.summary_line}**"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "a": {"path": self.a.path, "format": str(self.a.format), "container": self.a.container,
                  "left_out": list(self.left_out[0])},
            "b": {"path": self.b.path, "format": str(self.b.format), "container": self.b.container,
                  "left_out": list(self.left_out[1])},
            "equal": self.equal,
            "tolerance": {"rtol": self.rtol, "atol": self.atol, "equal_nan": self.equal_nan,
                          "values_compared": self.values, "ignore_dtype": self.ignore_dtype},
            "summary": {str(s): self.count(s) for s in (REMOVED, ADDED, CHANGED, EQUAL)},
            "hints": list(self.renames),
            "notes": list(self.notes),
            "strict_sharing": self.strict_sharing,
            "keys": [k.to_dict() for k in self.listed],
            "module_depth": self.depth,
            "module_sort": self.sort,
            "modules": [m.to_dict() for m in self.modules],
        }

    def rows(self) -> list[dict[str, Any]]:
        if self.by_module:
            return [m.to_dict() for m in self.modules]
        out = []
        for k in self.listed:
            d = k.to_dict()
            ch = "; ".join(f"{f}: {v['a']} -> {v['b']}" for f, v in d.get("changes", {}).items())
            out.append({"name": d["name"], "status": d["status"], "changes": ch, "max_abs": d.get("max_abs", ""),
                        "max_rel": d.get("max_rel", ""), "mismatched": d.get("mismatched", ""),
                        "note": d.get("note", "")})
        return out


def _key(e: Entry) -> str:
    return e.name


def _structure(a: TensorInfo, b: TensorInfo) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    if a.shape != b.shape:
        out["shape"] = (list(a.shape), list(b.shape))
    if a.dtype != b.dtype:
        out["dtype"] = (a.dtype, b.dtype)
    if a.device != b.device:
        out["device"] = (a.device, b.device)
    if a.layout != b.layout:
        out["layout"] = (a.layout, b.layout)
    return out


def _prefix_hint(only_a: list[str], only_b: list[str]) -> list[str]:
    """Renames that are only a prefix difference: suggest the flag that aligns them."""
    hints = []
    for side, other, keys, targets in (("A", "B", only_a, only_b), ("B", "A", only_b, only_a)):
        for p, c in sorted(prefix_matches(keys, targets).items(), key=lambda x: -x[1])[:1]:
            hints.append(f"{c} key(s) of {side} match {other} after removing {p!r}: add --strip-prefix {p}")
    return hints


def _shared_groups(entries: Iterable[Entry]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for users in shared_storages(entries).values():
        names = frozenset(e.name for e in users)
        for n in names:
            out[n] = names
    return out


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
    if sort not in SORTS:
        raise UsageError(None, f"unknown --sort {sort!r}", f"choose from: {', '.join(SORTS)}")
    sort = SortOrder(sort)
    pairing = onnx_pairs.pair(a, b)  # an ONNX export against its checkpoint: renamed initializers paired
    if pairing is not None:
        a, b = pairing.a, pairing.b
    ea = {_key(e): e for e in a.entries if everything or e.group == ""}
    eb = {_key(e): e for e in b.entries if everything or e.group == ""}
    keys: list[_Work] = []
    stored_a, stored_b = list(ea.values()), list(eb.values())
    aliases = {"A": _restore_aliases(a, ea, stored_b), "B": _restore_aliases(b, eb, stored_a)}
    only_a = [n for n in ea if n not in eb]
    only_b = [n for n in eb if n not in ea]
    folded = pairing.folded if pairing is not None else frozenset()
    keys += [_Work(n, FOLDED if n in folded else REMOVED) for n in only_a]
    keys += [_Work(n, FOLDED if n in folded else ADDED) for n in only_b]
    # Sharing over every entry (an EMA or optimizer tensor on a model tensor's storage counts too),
    # with the restored aliases on their targets' storage.
    shared_a = _shared_groups([*a.entries, *(ea[n] for n in aliases["A"])])
    shared_b = _shared_groups([*b.entries, *(eb[n] for n in aliases["B"])])
    sharing: list[str] = []
    common = [n for n in ea if n in eb]
    pairs: list[tuple[_Work, TensorInfo, TensorInfo]] = []
    for n in common:
        x, y = ea[n], eb[n]
        kd = _Work(n, EQUAL)
        if (x.tensor is None) != (y.tensor is None):
            kd.status = CHANGED
            kd.changes["type"] = ("tensor" if x.tensor else x.value_type, "tensor" if y.tensor else y.value_type)
        elif x.tensor is None:
            if x.value != y.value:
                kd.status = CHANGED
                kd.changes["value"] = (x.value, y.value)
        else:
            assert y.tensor is not None
            kd.numel = x.tensor.numel
            kd.changes.update(_structure(x.tensor, y.tensor))
            if ignore_dtype:
                kd.changes.pop("dtype", None)
            if x.kind != y.kind and not (x.evidence.inferred or y.evidence.inferred):
                kd.changes["kind"] = (x.kind, y.kind)
            for side, found in aliases.items():
                if n in found:
                    _add_note(kd, f"{side} leaves it out: an alias of {found[n].target} ({found[n].source})")
            sa, sb = shared_a.get(n, frozenset()), shared_b.get(n, frozenset())
            if sa != sb:
                shared = (sorted(sa - {n}), sorted(sb - {n}))
                if strict_sharing:
                    kd.changes["shared_with"] = shared
                else:
                    sharing.append(n)
                    _add_note(kd, f"storage shared with {shared[0] or 'no other key'} in A, {shared[1] or 'no other key'} "
                                  "in B")
            if pairing is not None and n in pairing.how:
                _add_note(kd, f"matched {pairing.how[n]}")
            if kd.changes:
                kd.status = CHANGED
            if values and "shape" not in kd.changes:
                pairs.append((kd, x.tensor, y.tensor))
        keys.append(kd)
    if pairs:
        _compare_values(a, b, pairs, rtol, atol, equal_nan, progress)
    order = {n: i for i, n in enumerate(list(ea) + only_b)}
    keys.sort(key=lambda k: order.get(k.name, 0))
    frozen = tuple(KeyDiff(**{**vars(k), "changes": MappingProxyType(k.changes)}) for k in keys)
    left_out = ((), ()) if everything else (_groups(a), _groups(b))
    hints = _prefix_hint(only_a, only_b) + _precision_hint(keys, ea, eb, rtol, atol)
    return DiffResult(a, b, frozen, rtol, atol, equal_nan, values, tuple(hints), only_changed,
                      left_out, ignore_dtype, sort_modules(module_changes(frozen, depth or AUTO), sort), depth, by_module, sort,
                      tuple(_notes(aliases, sharing)), strict_sharing)


def _restore_aliases(ck: Checkpoint, mine: dict[str, Entry], other: list[Entry]) -> dict[str, Alias]:
    """Keys the other side stores that `ck` leaves out but records as ties: added to `mine` as entries
    of the tensor they name, so they are compared (values, and storage sharing) like any key."""
    wanted = [e.name for e in other if e.name not in mine and e.group == "" and e.tensor is not None]
    found = recorded_aliases(ck, wanted) if wanted else {}
    for alias in found.values():
        if alias.target in mine:
            mine[alias.name] = alias_entry(alias, mine[alias.target])
    return {n: x for n, x in found.items() if n in mine}


def _notes(aliases: dict[str, dict[str, Alias]], sharing: list[str]) -> list[str]:
    out = []
    for side, found in aliases.items():
        if found:
            shown = ", ".join(f"{x.name} -> {x.target}" for x in list(found.values())[:3]) + (", ..." if len(found) > 3 else "")
            sources = ", ".join(sorted({str(x.source) for x in found.values()}))
            out.append(f"{side} leaves out {plural(len(found), 'tied key')} ({sources}); each was compared as the tensor "
                       f"it aliases: {shown}")
    if sharing:
        out.append(f"storage sharing differs for {plural(len(sharing), 'key')} ({', '.join(sharing[:3])}"
                   f"{', ...' if len(sharing) > 3 else ''}): tensors tied or viewed on one side are stored apart on the "
                   "other; a structure note, not a difference (--strict-sharing makes it one)")
    return out


def _add_note(kd: _Work, text: str) -> None:
    kd.note = f"{kd.note}; {text}" if kd.note else text


# torch.testing.assert_close's default tolerances: the precision a dtype can be compared at.
_DTYPE_TOL = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
              "float8_e4m3fn": (1.25e-1, 1e-3), "float8_e5m2": (2.5e-1, 1e-3)}


def _precision_hint(keys: list[_Work], ea: dict[str, Entry], eb: dict[str, Entry], rtol: float, atol: float) -> list[str]:
    """Values compared across dtypes that differ only at the narrower dtype's precision: say which
    tolerance compares them at that precision (a float16 export of float32 weights, say)."""
    loose = (0.0, 0.0)
    for k in keys:
        if not k.mismatched or not k.compared_as:
            continue
        x, y = ea[k.name].tensor, eb[k.name].tensor
        for t in (x, y):
            tol = _DTYPE_TOL.get(t.dtype if t is not None else "", (0.0, 0.0))
            loose = max(loose, tol)
    if loose <= (rtol, atol) or loose == (0.0, 0.0):
        return []
    return [f"values were compared across dtypes at rtol={rtol:g}, atol={atol:g}; the narrower dtype keeps less "
            f"precision: --rtol {loose[0]:g} --atol {loose[1]:g} compares at its precision (torch.testing.assert_close's "
            "defaults)"]


def _groups(ck: Checkpoint) -> tuple[str, ...]:
    return tuple(sorted({e.group for e in ck.entries if e.group}))


def _compare_values(a: Checkpoint, b: Checkpoint, pairs: list[tuple[_Work, TensorInfo, TensorInfo]], rtol: float,
                    atol: float, equal_nan: bool, progress: Callable[[int, int], None] | None) -> None:
    """Each pair through the numpy kernel (compare.py) when numpy can read both tensors; through torch
    (imported only then) for the rest: complex, DCP directories, torch-only dtypes."""
    import importlib.util

    from ..io.values import dequantizable, numpy_readable, value_reader
    from .compare_pool import pool_for

    torch_here = importlib.util.find_spec("torch") is not None

    def by_numpy(x: TensorInfo, y: TensorInfo) -> bool:
        # Complex |a-b|: numpy's hypot and torch's abs differ in the last bit, so torch compares those
        # where it is installed; the core install (no torch) compares them with numpy.
        complex_pair = _complex(x.dtype) or _complex(y.dtype)
        # A quantized weight is compared on its dequantized float32 values, read in row chunks.
        readable = all(numpy_readable(t) or dequantizable(t) for t in (x, y))
        return readable and not (complex_pair and torch_here)

    with value_reader(a) as ra, value_reader(b) as rb:
        numpy_pairs = [(x, y) for _, x, y in pairs if by_numpy(x, y)]
        pool = pool_for(sum(x.nbytes + y.nbytes for x, y in numpy_pairs),
                        {t.source for x, y in numpy_pairs for t in (x, y) if t.source})
        done: dict[tuple[Any, ...], _Work] = {}  # a pair of views compared before (a tie, an alias): its figures
        try:
            for i, (kd, x, y) in enumerate(pairs):
                if progress:
                    progress(i, len(pairs))
                if (any(t.layout != Layout.STRIDED and not dequantizable(t) for t in (x, y))
                        or "meta" in (x.device, y.device)):
                    _add_note(kd, f"values of {x.layout}/{x.device} tensors not compared")
                    continue
                same = (_view(x), _view(y)) if x.storage_key is not None and y.storage_key is not None else None
                if same in done:
                    _copy_figures(done[same], kd)
                    continue
                note, kd.note = kd.note, None
                try:
                    if by_numpy(x, y):
                        _compare_numpy(kd, x, y, ra, rb, rtol, atol, equal_nan, pool)
                    else:
                        _compare_torch(kd, x, y, ra, rb, rtol, atol, equal_nan)
                finally:
                    ra.release(x)
                    rb.release(y)
                if same is not None:
                    done[same] = _Work(kd.name, kd.status, max_abs=kd.max_abs, max_rel=kd.max_rel, mismatched=kd.mismatched,
                                       numel=kd.numel, compared_as=kd.compared_as, note=kd.note, sums=kd.sums)
                kd.note = "; ".join(n for n in (note, kd.note) if n) or None
                if kd.mismatched:
                    kd.status = CHANGED
        finally:
            if pool is not None:
                pool.close()
        if progress:
            progress(len(pairs), len(pairs))


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
                   equal_nan: bool, pool: Any = None) -> None:
    """One pass over the pair: chunks read (pread) and compared on both cores, merged in order; on the
    worker processes of `pool` (compare_pool.py) when given and both tensors are plain local reads."""
    from ..io.values import ordered_map
    from .compare import Partial, compare_chunk, promote, work_dtype
    from .compare_pool import SPAN, tasks

    xd, yd = ("float32" if t.quant is not None else t.dtype for t in (x, y))  # quantized: dequantized values
    if xd != yd:
        kd.compared_as = promote(xd, yd)

    def one(lo: int, hi: int) -> Partial:
        return compare_chunk(ra.read_flat(x, lo, hi, 0), rb.read_flat(y, lo, hi, 1), xd, yd, rtol, atol, equal_nan)

    plain = x.quant is None and y.quant is None  # the worker processes read plain tensors only
    work = tasks(ra, rb, x, y, rtol, atol, equal_nan) if pool is not None and x.numel > SPAN and plain else None
    total = Partial()
    for part in pool.map(work) if work is not None else ordered_map(one, x.numel, NP_CHUNK):
        total.merge(part)
    kd.max_abs, kd.max_rel, kd.mismatched = total.max_abs, total.max_rel, total.bad
    # Norms of integer tensors (step counters, masks, ids) would swamp a module's weights: floats only.
    kd.sums = total.sums if work_dtype(promote(xd, yd)) != "int64" else None
    if total.nonfinite_bad:
        _add_note(kd, f"{total.nonfinite_bad} element(s) differ by NaN or Inf (not counted in max_abs)")


def _compare_torch(kd: _Work, x: TensorInfo, y: TensorInfo, ra: Any, rb: Any, rtol: float, atol: float,
                   equal_nan: bool) -> None:
    import torch

    def done(lo: int, hi: int) -> None:
        ra.release_elements(x, lo, hi)  # contiguous tensors: drop each chunk's pages
        rb.release_elements(y, lo, hi)

    _compare_pair(kd, ra.tensor(x), rb.tensor(y), rtol, atol, equal_nan, torch, done)
