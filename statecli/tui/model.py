"""What `browse` shows, as plain data: the module tree of a checkpoint with per-module totals and,
against a second checkpoint, the per-module change figures; no textual, so it is tested alone."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..analyses.changes import ModuleChange, module_changes
from ..errors import UsageError
from ..state import Entry, Kind, unique_storage_bytes

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..analyses.diff import DiffResult, KeyDiff
    from ..analyses.inspect import InspectResult

ROOT = ""  # the path of the tree's root


@dataclass(frozen=True)
class Node:
    """A module (a dotted prefix of entry names) with everything below it."""

    path: str  # dotted; ROOT for the checkpoint itself
    children: tuple[str, ...]  # child module paths, in model order (first appearance)
    entries: tuple[Entry, ...]  # every entry below this module, in model order
    tensors: int
    nbytes: int  # distinct storage bytes: shared storage counted once
    kinds: tuple[tuple[str, int], ...]  # tensors by kind, most first
    change: ModuleChange | None = None  # two checkpoints: this module's values compared as a whole

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def moved(self) -> bool:
        """Something in this module differs between the two checkpoints."""
        c = self.change
        return c is not None and (c.changed + c.added + c.removed) > 0


@dataclass(frozen=True)
class Filter:
    """Which entries the tree shows: names containing `text` (case-insensitive; a regex when it
    starts with '/'), of one kind ("buffer" means every buffer)."""

    text: str = ""
    kind: str | None = None

    def matcher(self) -> re.Pattern[str] | None:
        if not self.text:
            return None
        try:
            if self.text.startswith("/"):
                return re.compile(self.text[1:])
            return re.compile(re.escape(self.text), re.IGNORECASE)
        except re.error as exc:
            raise UsageError(None, f"not a regular expression: {exc}") from exc

    def keeps(self, e: Entry, rx: re.Pattern[str] | None) -> bool:
        if self.kind is not None and not (e.kind == self.kind or (self.kind == Kind.BUFFER and e.kind.is_buffer)):
            return False
        return rx is None or rx.search(e.name) is not None


@dataclass(frozen=True)
class Browse:
    """The data of one browser session: checkpoint A (and B), its tree, and the comparison."""

    title: str
    inspected: InspectResult
    compared: DiffResult | None = None
    keys: Mapping[str, KeyDiff] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def two(self) -> bool:
        return self.compared is not None

    def entries(self) -> list[Entry]:
        """A's entries, then (with B) the keys only B has, so added keys have a place in the tree."""
        out = list(self.inspected.entries)
        if self.compared is not None:
            have = {e.name for e in out}
            out += [e for e in self.compared.b.entries if e.group == "" and e.name not in have]
        return out

    def tree(self, flt: Filter = Filter()) -> dict[str, Node]:
        rx = flt.matcher()
        return build_tree([e for e in self.entries() if flt.keeps(e, rx)], self.changes())

    def changes(self) -> dict[str, ModuleChange]:
        return changes_by_module(self.compared.keys) if self.compared is not None else {}


def browse_data(inspected: InspectResult, compared: DiffResult | None = None) -> Browse:
    """What `statecli browse` shows, from `inspect` and (for two checkpoints) `diff` results."""
    ck = inspected.checkpoint
    title = ck.path if compared is None else f"{compared.a.path} -> {compared.b.path}"
    keys = MappingProxyType({k.name: k for k in compared.keys}) if compared is not None else MappingProxyType({})
    return Browse(title, inspected, compared, keys)


def parents(name: str) -> list[str]:
    """The modules holding an entry, root first: 'a.b.w' -> ['', 'a', 'a.b']."""
    parts = name.split(".")
    return [ROOT] + [".".join(parts[:i]) for i in range(1, len(parts))]


def build_tree(entries: Sequence[Entry], changes: Mapping[str, ModuleChange] | None = None) -> dict[str, Node]:
    """Every module below the root with its totals, keyed by path; children in model order."""
    below: dict[str, list[Entry]] = {ROOT: []}
    children: dict[str, list[str]] = {ROOT: []}
    for e in entries:
        chain = parents(e.name)
        for up, path in zip(chain, chain[1:]):
            if path not in below:
                below[path] = []
                children[path] = []
                children[up].append(path)
        for path in chain:
            below[path].append(e)
    out = {}
    for path, es in below.items():
        kinds: dict[str, int] = {}
        for e in es:
            if e.tensor is not None:
                kinds[e.kind] = kinds.get(e.kind, 0) + 1
        out[path] = Node(path, tuple(children[path]), tuple(es), sum(kinds.values()), unique_storage_bytes(es)[1],
                         tuple(sorted(kinds.items(), key=lambda kv: -kv[1])), (changes or {}).get(path))
    return out


def changes_by_module(keys: Sequence[KeyDiff]) -> dict[str, ModuleChange]:
    """Per-module change figures for every module of the tree: diff's own aggregation at each depth,
    keeping at depth n the modules of n name components (deeper keys are all inside them); the root
    is every key (depth 0)."""
    deepest = max((k.name.count(".") for k in keys), default=0)
    out: dict[str, ModuleChange] = {}
    for m in module_changes(keys, 0):
        out[ROOT] = m
    for depth in range(1, deepest + 1):
        for m in module_changes(keys, depth):
            if m.module.count(".") + 1 == depth and m.module != "(root)":
                out[m.module] = m
    return out


def status_of(key: KeyDiff | None) -> str:
    """The word for an entry's comparison ('' when it was not compared)."""
    return "" if key is None else str(key.status)

