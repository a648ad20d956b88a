"""What `browse` shows, as plain data: the module tree of a checkpoint with per-module totals and,
against a second checkpoint, the per-module change figures; no textual, so it is tested alone."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..analyses.module_tree import TOP, ModuleTree, TreeNode, build_tree
from ..errors import user_regex
from ..state import Entry, Kind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..analyses.changes import Compared
    from ..analyses.diff import DiffResult, KeyDiff
    from ..analyses.inspect import InspectResult

ROOT = TOP  # the path of the tree's root
Node = TreeNode  # a module of the browser's tree


@dataclass(frozen=True)
class Filter:
    """Which entries the tree shows: names containing `text` (case-insensitive; a regex when it
    starts with '/'), of one kind ("buffer" means every buffer)."""

    text: str = ""
    kind: str | None = None

    def matcher(self) -> re.Pattern[str] | None:
        if not self.text:
            return None
        if self.text.startswith("/"):
            return user_regex(self.text[1:], "filter")
        return re.compile(re.escape(self.text), re.IGNORECASE)

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

    def tree(self, flt: Filter = Filter()) -> ModuleTree:
        rx = flt.matcher()
        ck = self.inspected.checkpoint
        compared: Mapping[str, Compared] | None = self.keys if self.compared is not None else None
        return build_tree([e for e in self.entries() if flt.keeps(e, rx)], ck.container_name,
                          {m.path: m.class_name for m in ck.modules}, compared)


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


def status_of(key: KeyDiff | None) -> str:
    """The word for an entry's comparison ('' when it was not compared)."""
    return "" if key is None else str(key.status)

