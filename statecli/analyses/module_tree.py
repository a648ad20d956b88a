"""The module tree of a checkpoint, the one home of "how tensors add up by module": `inspect --tree`,
the HTML trees, `browse`, `size`'s by-module rows and `show`'s module path all read it.

The rule: a module's `tensors` and `numel` count every tensor below it (as the summary does); its
`nbytes` counts each distinct storage below it once, at the storage's size (storage.py's rule). So
a tied embedding adds its bytes to both modules that hold it, once to any module above both, and
the root's totals are the summary's totals. Rows of `level` partition the tensors, so with ties
their bytes may add up to more than the total.

Against a second checkpoint the tree carries a change overlay (diff's key comparisons by path): each
node the figures of the keys below it (browse), each `level` row those of its keys (diff --by-module),
added up by changes.Tally."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..fastdata import fast_init
from ..state import ROOT, Entry, gc_paused
from ..storage import shared_storages, storage_bytes, unique_storage_bytes
from .changes import Compared, ModuleChange, Tally, module_prefix

TOP = ""  # the path of the tree's root


def tree_path(e: Entry) -> str:
    """An entry's dotted place in the tree: its name, under its container's name when the entry
    sits outside the model state and its name does not already start with it."""
    g = e.group
    return e.name if not g or e.name.startswith(g + ".") else f"{g}.{e.name}"


def parent_of(path: str) -> str:
    return path.rpartition(".")[0]


@fast_init  # 50,000-tensor files have ~55,000 modules: see fastdata.fast_init
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
    """One row of `level`: a module and the entries it stands for at that depth."""

    module: str
    keys: int  # entries, tensors or not
    tensors: int
    numel: int
    nbytes: int
    change: ModuleChange | None = None  # the row's keys compared (a tree with a change overlay)


@dataclass(frozen=True)
class ModuleTree:
    """Every module of a checkpoint, keyed by path, with totals; the root is `nodes[TOP]`."""

    nodes: Mapping[str, TreeNode]
    entries: tuple[Entry, ...]  # what the tree was built from, in model order
    label: str = ROOT  # the root's name as shown (the model state's container)
    classes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # path -> class name
    compared: Mapping[str, Compared] | None = None  # the change overlay: key comparisons by entry path

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
        """The tree cut `depth` components down (size --depth, diff --by-module): see `level`."""
        return level(self.entries, depth, self.compared)


def level(entries: Sequence[Entry], depth: int, compared: Mapping[str, Compared] | None = None) -> tuple[LevelRow, ...]:
    """`size --depth` and `diff --by-module`: each entry billed to its module `depth` components down,
    or to its own module when it sits higher (ROOT for a top-level key; AUTO: per numbered block, see
    changes.module_prefix); rows in model order, bytes by the tree's rule (a storage counted once per
    row), with the figures of the row's keys where `compared` (the change overlay) is given. A
    function of the entries, not the nodes: diff takes its rows without building the nodes it only
    draws for HTML (~55,000 modules for a 50,000-tensor file)."""
    rows: dict[str, list[Entry]] = {}
    for e in entries:
        rows.setdefault(module_prefix(tree_path(e), depth), []).append(e)
    return tuple(_row(m, es, compared) for m, es in rows.items())


def _row(module: str, entries: list[Entry], compared: Mapping[str, Compared] | None) -> LevelRow:
    tensors = [e for e in entries if e.tensor is not None]
    change = None
    if compared is not None:
        tally = Tally()
        for e in entries:
            k = compared.get(tree_path(e))
            if k is not None:
                tally.add_key(k)
        change = tally.result(module)
    return LevelRow(module, len(entries), len(tensors), sum(e.tensor.numel for e in tensors if e.tensor),
                    unique_storage_bytes(tensors)[1], change)


def build_tree(entries: Sequence[Entry], label: str = ROOT, classes: Mapping[str, str] | None = None,
               compared: Mapping[str, Compared] | None = None) -> ModuleTree:
    """The tree of `entries` (tensors and values; only tensors count in the totals), optionally with
    a change overlay: diff's key comparisons keyed by entry path. One pass adds each tensor to its own
    module; totals then flow up; the few shared storages are settled per module at the end (once
    each, at their size)."""
    with gc_paused():  # ~2 objects a module and a tensor: see state.gc_paused
        return _build(entries, label, classes or {}, compared)


def _build(entries: Sequence[Entry], label: str, classes: Mapping[str, str],
           compared: Mapping[str, Compared] | None) -> ModuleTree:
    # path -> [children, leaves, keys, tensors, numel, unshared bytes, {kind: tensors}], parents first
    acc: dict[str, list[Any]] = {TOP: [[], [], 0, 0, 0, 0, {}]}
    shared = shared_storages(entries)
    for e in entries:
        g = e.group
        path = e.name if not g or e.name.startswith(g + ".") else f"{g}.{e.name}"  # tree_path, inlined
        module = path.rpartition(".")[0]
        a = acc.get(module)
        if a is None:
            a = _add_module(module, acc)
        a[1].append(e)
        a[2] += 1
        t = e.tensor
        if t is None:
            continue
        a[3] += 1
        a[4] += t.numel
        if not shared or t.storage_id not in shared:
            a[5] += storage_bytes(t)
        k = a[6]
        k[e.kind] = k.get(e.kind, 0) + 1
    for path in reversed(list(acc)):  # children before their parents: every total flows up
        if path != TOP:
            a, up = acc[path], acc[path.rpartition(".")[0]]
            up[2] += a[2]
            up[3] += a[3]
            up[4] += a[4]
            up[5] += a[5]
            k = up[6]
            for kind, n in a[6].items():
                k[kind] = k.get(kind, 0) + n
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
            acc[m][5] += size
    tallies = _overlay(compared) if compared is not None else {}
    nodes = {p: TreeNode(p, tuple(a[0]), tuple(a[1]), a[2], a[3], a[4], a[5],
                         tuple(a[6].items()) if len(a[6]) < 2 else tuple(sorted(a[6].items(), key=lambda kv: -kv[1])),
                         tallies[p].result(p) if p in tallies else None) for p, a in acc.items()}
    return ModuleTree(MappingProxyType(nodes), tuple(entries), label, MappingProxyType(dict(classes)),
                      None if compared is None else MappingProxyType(dict(compared)))


def _overlay(compared: Mapping[str, Compared]) -> dict[str, Tally]:
    """Each module's tally of every compared key below it. From the comparisons, not the tree's
    entries: a tree filtered for display still shows how its modules changed as a whole."""
    tallies: dict[str, Tally] = {TOP: Tally()}  # parents before children, as in _build
    for path, k in compared.items():
        module = parent_of(path)
        t = tallies.get(module)
        if t is None:
            for p in _missing(module, tallies):
                tallies[p] = Tally()
            t = tallies[module]
        t.add_key(k)
    for path in reversed(list(tallies)):  # children before their parents: every tally flows up
        if path != TOP:
            tallies[parent_of(path)].add(tallies[path])
    return tallies


def _missing(path: str, have: Mapping[str, object]) -> list[str]:
    """`path` and every module above it not in `have`, parents first (a loop: a name may have
    thousands of dots)."""
    missing = [path]
    up = parent_of(path)
    while up not in have:
        missing.append(up)
        up = parent_of(up)
    return missing[::-1]


def _add_module(path: str, acc: dict[str, list[Any]]) -> list[Any]:
    """Add `path` and every missing module above it, each under its parent; `path`'s record."""
    for p in _missing(path, acc):
        acc[parent_of(p)][0].append(p)
        acc[p] = [[], [], 0, 0, 0, 0, {}]
    return acc[path]
