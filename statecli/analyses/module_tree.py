"""The module tree of a checkpoint, the one home of "how tensors add up by module": `inspect --tree`,
the HTML trees, `browse`, `size`'s by-module rows and `show`'s module path all read it.

The rule: a module's `tensors` and `numel` count every tensor below it (as the summary does); its
`nbytes` counts each distinct storage below it once, at the storage's size (storage.py's rule). So
a tied embedding adds its bytes to both modules that hold it, once to any module above both, and
the root's totals are the summary's totals. Rows of `level` partition the tensors, so with ties
their bytes may add up to more than the total."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..state import ROOT, Entry
from ..storage import shared_storages, storage_bytes, unique_storage_bytes

if TYPE_CHECKING:
    from .changes import ModuleChange

TOP = ""  # the path of the tree's root


def tree_path(e: Entry) -> str:
    """An entry's dotted place in the tree: its name, under its container's name when the entry
    sits outside the model state and its name does not already start with it."""
    g = e.group
    return e.name if not g or e.name.startswith(g + ".") else f"{g}.{e.name}"


def parent_of(path: str) -> str:
    return path.rpartition(".")[0]


@dataclass(frozen=True)
class TreeNode:
    """A module (a dotted prefix of entry paths) and the totals of everything below it."""

    path: str  # dotted; TOP for the root
    children: tuple[str, ...]  # child module paths, in model order (first appearance)
    leaves: tuple[Entry, ...]  # the entries directly in this module, in model order
    keys: int  # entries below, tensors or not
    tensors: int
    numel: int
    nbytes: int  # distinct storage bytes below: shared storage counted once
    kinds: tuple[tuple[str, int], ...]  # tensors by kind, most first
    change: ModuleChange | None = None  # two checkpoints: this module's values compared as a whole

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def depth(self) -> int:
        return self.path.count(".") + 1 if self.path else 0

    @property
    def moved(self) -> bool:
        """Something in this module differs between the two checkpoints."""
        c = self.change
        return c is not None and (c.changed + c.added + c.removed) > 0


@dataclass(frozen=True)
class LevelRow:
    """One row of `level`: a module and the tensors it stands for at that depth."""

    module: str
    tensors: int
    numel: int
    nbytes: int


@dataclass(frozen=True)
class ModuleTree:
    """Every module of a checkpoint, keyed by path, with totals; the root is `nodes[TOP]`."""

    nodes: Mapping[str, TreeNode]
    entries: tuple[Entry, ...]  # what the tree was built from, in model order
    label: str = ROOT  # the root's name as shown (the model state's container)
    classes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # path -> class name

    @property
    def root(self) -> TreeNode:
        return self.nodes[TOP]

    def __getitem__(self, path: str) -> TreeNode:
        return self.nodes[path]

    def walk(self, path: str = TOP) -> Iterator[TreeNode]:
        """`path`'s node and every module below it, depth first, children in model order."""
        stack = [path]
        while stack:
            node = self.nodes[stack.pop()]
            yield node
            stack.extend(reversed(node.children))

    def entries_under(self, path: str) -> tuple[Entry, ...]:
        """Every entry below `path`, in model order."""
        if path == TOP:
            return self.entries
        dot = path + "."
        return tuple(e for e in self.entries if tree_path(e).startswith(dot))

    def level(self, depth: int) -> tuple[LevelRow, ...]:
        """`size --depth`: each tensor billed to its module `depth` components down, or to its own
        module when it sits higher (ROOT for a top-level key); rows in model order, bytes by the
        tree's rule (a storage counted once per row)."""
        rows: dict[str, list[Entry]] = {}
        for e in self.entries:
            if e.tensor is None:
                continue
            parts = tree_path(e).split(".", depth)
            m = ".".join(parts[:depth]) if len(parts) > depth else ".".join(parts[:-1]) or ROOT
            rows.setdefault(m, []).append(e)
        return tuple(LevelRow(m, len(es), sum(e.tensor.numel for e in es if e.tensor), unique_storage_bytes(es)[1])
                     for m, es in rows.items())


def build_tree(entries: Sequence[Entry], label: str = ROOT, classes: Mapping[str, str] | None = None,
               changes: Mapping[str, ModuleChange] | None = None) -> ModuleTree:
    """The tree of `entries` (tensors and values; only tensors count in the totals), optionally with
    per-module change figures keyed by path. One pass adds each tensor to its own module; totals then
    flow up; the few shared storages are settled per module at the end (once each, at their size)."""
    children: dict[str, list[str]] = {TOP: []}
    leaves: dict[str, list[Entry]] = {TOP: []}
    own: dict[str, list[int]] = {TOP: [0, 0, 0, 0]}  # path -> [keys, tensors, numel, unshared bytes] directly in it
    kinds: dict[str, dict[str, int]] = {TOP: {}}
    shared = shared_storages(entries)
    for e in entries:
        path = tree_path(e)
        module = parent_of(path)
        if module not in leaves:
            _add_module(module, children, leaves, own, kinds)
        leaves[module].append(e)
        acc = own[module]
        acc[0] += 1
        t = e.tensor
        if t is None:
            continue
        acc[1] += 1
        acc[2] += t.numel
        if not shared or t.storage_id not in shared:
            acc[3] += storage_bytes(t)
        k = kinds[module]
        k[e.kind] = k.get(e.kind, 0) + 1
    total = {p: list(v) for p, v in own.items()}
    below = {p: dict(v) for p, v in kinds.items()}
    for path in reversed(list(children)):  # children were added after their parents
        if path != TOP:
            up, acc, k = parent_of(path), total[path], below[path]
            top_acc, top_k = total[up], below[up]
            for i in range(4):
                top_acc[i] += acc[i]
            for kind, n in k.items():
                top_k[kind] = top_k.get(kind, 0) + n
    for users in shared.values():
        largest: dict[str, int] = {}  # module -> the storage's size, once per module holding a user
        for e in users:
            assert e.tensor is not None
            size = e.tensor.storage_size
            m = parent_of(tree_path(e))
            while True:
                if size > largest.get(m, 0):
                    largest[m] = size
                if m == TOP:
                    break
                m = parent_of(m)
        for m, size in largest.items():
            total[m][3] += size
    ch = changes or {}
    nodes = {p: TreeNode(p, tuple(children[p]), tuple(leaves[p]), *total[p],
                         tuple(sorted(below[p].items(), key=lambda kv: -kv[1])), ch.get(p)) for p in children}
    return ModuleTree(MappingProxyType(nodes), tuple(entries), label, MappingProxyType(dict(classes or {})))


def _add_module(path: str, children: dict[str, list[str]], leaves: dict[str, list[Entry]],
                own: dict[str, list[int]], kinds: dict[str, dict[str, int]]) -> None:
    """Add `path` and any missing module above it, each under its parent."""
    up = parent_of(path)
    if up not in leaves:
        _add_module(up, children, leaves, own, kinds)
    children[up].append(path)
    children[path], leaves[path], own[path], kinds[path] = [], [], [0, 0, 0, 0], {}
