"""Walks over the object graphs the no-execution unpickler builds. A pickle's memo lets a file of a
few hundred bytes reach one container billions of times by distinct paths, or reach itself: every
walk here visits each object once (a visited set), reports a cycle as a cycle, names a shared
container again only within a budget (then refers to where it was first listed), and renders a value
within a node budget. Work and memory grow with the objects the pickle built, never with its paths."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput
from ..io.limits import int_text, safe_str
from ..state import TensorInfo
from .inert import DtypeValue, NamedValue, StubObject, TensorRef

# Distinct containers one walk may visit: the unpickler's size cap bounds them already; this keeps a
# hostile graph from costing more than a listing could ever show.
MAX_OBJECTS = 5_000_000
# Names given to containers already listed under another name. Modest sharing is listed as torch.load
# would show it (both names); past this many, a shared container becomes one reference entry.
MAX_REPEATS = 1_000
# Nodes rendered for one non-tensor value (items per container and depth are capped as well).
MAX_RENDERED = 2_000
# Levels a rewrite re-creates (the C pickler and our rebuild recurse; real checkpoints nest < 20).
MAX_DEPTH = 200
VALUE_ITEMS = 16
VALUE_DEPTH = 4
_CONTAINERS = (Mapping, list, tuple)


@dataclass(frozen=True)
class GraphRef:
    """A place that is not listed again: a cycle back to a container being listed (`kind` "cycle"),
    or a container already listed under another name past the repeat budget ("shared")."""

    kind: str
    target: str  # the name it was first listed under; "" is the root

    def __str__(self) -> str:
        where = repr(self.target) if self.target else "the root"
        if self.kind == "cycle":
            return f"<cycle: refers back to {where}>"
        return f"<shared: same object as {where}>"

    @property
    def type_name(self) -> str:
        return "cycle" if self.kind == "cycle" else "shared reference"


def is_tensor(v: Any) -> bool:
    return isinstance(v, (TensorRef, TensorInfo))


def tensor_holders(root: Any, path: str | None = None) -> set[int]:
    """ids of the mappings, lists and tuples under `root` with a tensor somewhere below them, in one
    pass over the graph (each container once, however shared; cycles end): parents are recorded on
    the way down, then holding is propagated up from the containers that hold a tensor directly."""
    if not isinstance(root, _CONTAINERS):
        return set()
    parents: dict[int, Any] = {}  # child id -> parent id, or a list of them when shared (most have one)
    seen: set[int] = set()
    direct: list[int] = []
    todo: list[Any] = [root]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if len(seen) > MAX_OBJECTS:
            raise BadInput(path, f"the saved object graph holds more than {MAX_OBJECTS:,} containers; "
                                 "statecli does not list it")
        held = False
        for c in x.values() if isinstance(x, Mapping) else x:
            if is_tensor(c):
                held = True
            elif isinstance(c, _CONTAINERS) and c:  # an empty container holds nothing: not recorded
                p = parents.get(id(c))
                if p is None:
                    parents[id(c)] = id(x)
                elif type(p) is list:
                    p.append(id(x))
                else:
                    parents[id(c)] = [p, id(x)]
                if id(c) not in seen:
                    todo.append(c)
        if held:
            direct.append(id(x))
    holders: set[int] = set()
    while direct:
        i = direct.pop()
        if i not in holders:
            holders.add(i)
            p = parents.get(i)
            if type(p) is list:
                direct.extend(p)
            elif p is not None:
                direct.append(p)
    return holders


def holds_tensors(v: Any) -> bool:
    return is_tensor(v) or (isinstance(v, _CONTAINERS) and id(v) in tensor_holders(v))


class _Whole:
    """Marks a container without tensors, listed as one value rather than element by element."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{safe_str(key)}" if prefix else safe_str(key)


def flatten(obj: Any, prefix: str, path: str | None = None) -> list[tuple[str, Any]]:
    """Dotted names for every tensor and every plain value; containers without tensors are one value.

    Mappings are listed key by key, lists and tuples element by element when they hold a tensor. A
    container reached again while it is being listed is a GraphRef cycle; one reached again by
    another name is listed again (as torch.load would show it) until MAX_REPEATS such names, then it
    is a GraphRef to its first name."""
    holders = tensor_holders(obj, path)
    out: list[tuple[str, Any]] = []
    first: dict[int, str] = {}
    on_path: dict[int, str] = {}
    repeats = 0
    stack: list[tuple[str, Any, bool]] = [(prefix, obj, False)]
    while stack:
        name, x, leaving = stack.pop()
        if leaving:
            on_path.pop(id(x), None)
            continue
        if isinstance(x, _Whole):
            out.append((name, x.value))
            continue
        is_map = isinstance(x, Mapping)
        if not ((is_map and (x or not name)) or (isinstance(x, (list, tuple)) and id(x) in holders)):
            out.append((name, x))
            continue
        key = id(x)
        if key in on_path:
            out.append((name, GraphRef("cycle", on_path[key])))
            continue
        if key in first:
            if repeats >= MAX_REPEATS:
                out.append((name, GraphRef("shared", first[key])))
                continue
            repeats += max(1, len(x))
        else:
            first[key] = name
        on_path[key] = name
        stack.append((name, x, True))
        children = list(x.items()) if is_map else list(enumerate(x))
        for k, v in reversed(children):
            whole = is_map and isinstance(v, _CONTAINERS) and v and id(v) not in holders
            stack.append((_join(name, k), _Whole(v) if whole else v, False))
    return out


def render_value(v: Any) -> Any:
    """A JSON-able rendering of a non-tensor value: at most VALUE_ITEMS items per container,
    VALUE_DEPTH levels and MAX_RENDERED nodes; a container met again is shown as a reference to
    where it was first shown (unless it only holds plain values), a cycle as a cycle."""
    return _Render().value(v, "", 0)


class _Render:
    def __init__(self) -> None:
        self.first: dict[int, str] = {}
        self.on_path: set[int] = set()
        self.left = MAX_RENDERED

    def value(self, v: Any, where: str, depth: int) -> Any:
        self.left -= 1
        if v is None or isinstance(v, (bool, int, str)):
            if isinstance(v, str) and len(v) > 200:
                return v[:200] + "..."
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**63:
                return safe_str(v)  # '<int of 5001 digits>' past Python's int-to-string limit
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else str(v)
        if isinstance(v, complex):
            return str(v)
        if isinstance(v, (bytes, bytearray)):
            return f"<{len(v)} bytes>"
        if isinstance(v, (DtypeValue, NamedValue)):
            return repr(v)
        if isinstance(v, GraphRef):
            return str(v)
        if is_tensor(v):
            return "<tensor>"
        if not isinstance(v, (Mapping, list, tuple, set, frozenset, StubObject)):
            if type(v).__repr__ is not object.__repr__:  # type: ignore[comparison-overlap]  # typeshed's signatures differ; the objects may not
                return repr(v)
            return f"<{type(v).__name__}>"
        if depth > VALUE_DEPTH or self.left < 0:
            return "..."
        key = id(v)
        if key in self.on_path:
            return f"<cycle: refers back to {_where(self.first[key])}>"
        if key in self.first and not _plain_leaf(v):
            return f"<shared: same object as {_where(self.first[key])}>"
        self.first.setdefault(key, where)
        self.on_path.add(key)
        try:
            return self._container(v, where, depth)
        finally:
            self.on_path.discard(key)

    def _container(self, v: Any, where: str, depth: int) -> Any:
        if isinstance(v, StubObject):
            attrs = v.attrs()
            if not attrs:
                return f"<{v.class_name}>"
            return {"__class__": v.class_name, **self._items(list(attrs.items()), where, depth)}
        if isinstance(v, Mapping):
            return self._items(list(v.items()), where, depth)
        seq = list(v)
        rendered: list[Any] = []
        for i, x in enumerate(seq[:VALUE_ITEMS]):
            if self.left < 0:
                rendered.append(f"... {len(seq) - i} more (value too large to show)")
                return rendered
            rendered.append(self.value(x, _join(where, i), depth + 1))
        if len(seq) > VALUE_ITEMS:
            rendered.append(f"... {len(seq) - VALUE_ITEMS} more")
        return rendered

    def _items(self, items: list[tuple[Any, Any]], where: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, (k, x) in enumerate(items[:VALUE_ITEMS]):
            if self.left < 0:
                out["..."] = f"{len(items) - i} more (value too large to show)"
                return out
            out[safe_str(k)] = self.value(x, _join(where, k), depth + 1)
        if len(items) > VALUE_ITEMS:
            out["..."] = f"{len(items) - VALUE_ITEMS} more"
        return out


def _where(name: str) -> str:
    return repr(name) if name else "this value"


def _plain_leaf(v: Any) -> bool:
    """A small container of plain values (a shared `betas` tuple): shown again rather than referred to."""
    if isinstance(v, StubObject):
        return False
    items = v.values() if isinstance(v, Mapping) else v
    return len(v) <= VALUE_ITEMS and all(x is None or isinstance(x, (bool, int, float, str)) for x in items)


def tame_keys(root: Any) -> None:
    """Replace dict keys that str() cannot print (an int past Python's int-to-string limit, or a tuple
    holding one) by their safe_str text, in place, once per container: every name built later from a
    key (flatten, classification, rendering) is then printable, in every output format."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, dict):
            if any(type(k) is not str and _unprintable(k) for k in x):
                items = [(safe_str(k) if _unprintable(k) else k, v) for k, v in x.items()]
                x.clear()
                x.update(items)
            stack.extend(v for v in x.values() if v and isinstance(v, (dict, list, tuple, StubObject)))
        elif isinstance(x, (list, tuple)):
            stack.extend(v for v in x if v and isinstance(v, (dict, list, tuple, StubObject)))
        elif isinstance(x, StubObject):
            stack.extend(v for v in (x.state, x.args, x.items, x.listitems, x.kwargs)
                         if isinstance(v, (dict, list, tuple, StubObject)))


def _unprintable(k: Any, depth: int = 0) -> bool:
    if isinstance(k, int):
        return int_text(k) is not None
    if isinstance(k, tuple) and depth < 8:
        return any(_unprintable(x, depth + 1) for x in k)
    return False
