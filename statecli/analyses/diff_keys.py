"""`diff`'s structure side: how one key both checkpoints hold differs (type, value, shape, dtype,
kind, storage sharing), the tied keys a side leaves out restored, and the notes and hints on what
is the same although stored differently. The value pass (diff.py) fills in the figures."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..modeldef.ties import Alias, alias_entry, recorded_aliases
from ..notes import Note, NoteKind
from ..state import Checkpoint, DiffStatus, Entry, TensorInfo, prefix_matches
from ..storage import shared_storages
from ..units import plural
from .changes import Sums
from .module_tree import tree_path

EQUAL, CHANGED = DiffStatus.EQUAL, DiffStatus.CHANGED


@dataclass
class Work:
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



def structure(a: TensorInfo, b: TensorInfo) -> dict[str, tuple[Any, Any]]:
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


def prefix_hint(only_a: list[str], only_b: list[str]) -> list[str]:
    """Renames that are only a prefix difference: suggest the flag that aligns them."""
    hints = []
    for side, other, keys, targets in (("A", "B", only_a, only_b), ("B", "A", only_b, only_a)):
        for p, c in sorted(prefix_matches(keys, targets).items(), key=lambda x: -x[1])[:1]:
            hints.append(f"{c} key(s) of {side} match {other} after removing {p!r}: add --strip-prefix {p}")
    return hints


def shared_groups(entries: Iterable[Entry]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for users in shared_storages(entries).values():
        names = frozenset(e.name for e in users)
        for n in names:
            out[n] = names
    return out



@dataclass
class KeyCheck:
    """The structure of one key both sides hold: what differs, and the notes on what is the same
    although stored differently (an alias restored, storage shared on one side only)."""

    aliases: dict[str, dict[str, Alias]]  # side -> restored aliases by key
    shared_a: dict[str, frozenset[str]]  # key -> the keys sharing its storage in A
    shared_b: dict[str, frozenset[str]]
    ignore_dtype: bool
    strict_sharing: bool
    sharing: list[str] = field(default_factory=list)  # keys whose sharing differs (a note, unless strict)

    def key(self, n: str, x: Entry, y: Entry) -> Work:
        kd = Work(n, EQUAL)
        if (x.tensor is None) != (y.tensor is None):
            kd.changes["type"] = ("tensor" if x.tensor else x.value_type, "tensor" if y.tensor else y.value_type)
        elif x.tensor is None:
            if x.value != y.value:
                kd.changes["value"] = (x.value, y.value)
        else:
            self._tensors(kd, x, y)
        if kd.changes:
            kd.status = CHANGED
        return kd

    def _tensors(self, kd: Work, x: Entry, y: Entry) -> None:
        assert x.tensor is not None and y.tensor is not None
        kd.numel = x.tensor.numel
        kd.changes.update(structure(x.tensor, y.tensor))
        if self.ignore_dtype:
            kd.changes.pop("dtype", None)
        if x.kind != y.kind and not (x.evidence.inferred or y.evidence.inferred):
            kd.changes["kind"] = (x.kind, y.kind)
        for side, found in self.aliases.items():
            if kd.name in found:
                add_note(kd, f"{side} leaves it out: an alias of {found[kd.name].target} ({found[kd.name].source})")
        self._sharing(kd)

    def _sharing(self, kd: Work) -> None:
        n = kd.name
        sa, sb = self.shared_a.get(n, frozenset()), self.shared_b.get(n, frozenset())
        if sa == sb:
            return
        shared = (sorted(sa - {n}), sorted(sb - {n}))
        if self.strict_sharing:
            kd.changes["shared_with"] = shared
        else:
            self.sharing.append(n)
            add_note(kd, f"storage shared with {shared[0] or 'no other key'} in A, {shared[1] or 'no other key'} in B")


def placed(e: Entry) -> Entry:
    """`e` where the comparison's module tree puts it: at its key, its name (with --all, a top-level
    value named as its container would otherwise sit under itself)."""
    return e if tree_path(e) == e.name else replace(e, group="")


def restore_aliases(ck: Checkpoint, mine: dict[str, Entry], other: list[Entry]) -> dict[str, Alias]:
    """Keys the other side stores that `ck` leaves out but records as ties: added to `mine` as entries
    of the tensor they name, so they are compared (values, and storage sharing) like any key."""
    wanted = [e.name for e in other if e.name not in mine and e.group == "" and e.tensor is not None]
    found = recorded_aliases(ck, wanted, other) if wanted else {}
    for alias in found.values():
        if alias.target in mine:
            mine[alias.name] = alias_entry(alias, mine[alias.target])
    return {n: x for n, x in found.items() if n in mine}


def sharing_notes(aliases: dict[str, dict[str, Alias]], sharing: list[str]) -> list[Note]:
    """What was compared as the same although stored differently: restored aliases, sharing that differs."""
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
    return [Note(NoteKind.COMPARISON, text) for text in out]


def add_note(kd: Work, text: str) -> None:
    kd.note = f"{kd.note}; {text}" if kd.note else text


# torch.testing.assert_close's default tolerances: the precision a dtype can be compared at.
_DTYPE_TOL = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
              "float8_e4m3fn": (1.25e-1, 1e-3), "float8_e5m2": (2.5e-1, 1e-3)}


def precision_hint(keys: list[Work], ea: dict[str, Entry], eb: dict[str, Entry], rtol: float, atol: float) -> list[str]:
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
