"""TorchScript archives (torch.jit.save). Their data.pkl holds __torch__.* module objects whose BUILD
state is one flat dict of attributes (parameters, buffers, submodules and plain values side by side);
which names are parameters and buffers is declared by each class in the archive's code/ folder
(`__parameters__ = [...]`, `__buffers__ = [...]`). That source is read as text with two patterns —
never executed, never unpickled — and the objects are reshaped into the nn.Module layout
(_parameters/_buffers/_modules) the loader already classifies exactly."""

from __future__ import annotations

import ast
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput
from ..pickle.inert import StubObject
from .zipcheck import Archive

MAX_CODE_BYTES = 64 << 20  # source text read in all, to find the declarations
HINT = "load it with torch.jit.load, or save model.state_dict() with torch.save"
_CLASS = re.compile(r"^class ([A-Za-z_][A-Za-z0-9_]*)\(([A-Za-z_][A-Za-z0-9_.]*)\):\s*$")
_SLOTS = re.compile(r"^\s+(__parameters__|__buffers__)\s*=\s*(\[.*\])\s*$")


@dataclass(frozen=True)
class ModuleDecl:
    """What one TorchScript module class declares: its parameter and buffer names."""

    parameters: tuple[str, ...]
    buffers: tuple[str, ...]


def declarations(arc: Archive) -> dict[str, ModuleDecl]:
    """Qualified class name -> declaration, for every `class X(Module)` under code/. The file
    code/__torch__/a/b.py defines classes of module `__torch__.a.b` (mangled names included)."""
    out: dict[str, ModuleDecl] = {}
    left = MAX_CODE_BYTES
    for name, info in arc.infos.items():
        rel = name[len(arc.prefix):] if name.startswith(arc.prefix) else ""
        if not (rel.startswith("code/") and rel.endswith(".py")) or info.file_size > left:
            continue
        left -= info.file_size
        module = rel[len("code/"):-len(".py")].replace("/", ".")
        cls: str | None = None
        slots: dict[str, tuple[str, ...]] = {}
        for line in arc.member(name).decode("utf-8", "replace").splitlines():
            m = _CLASS.match(line)
            if m:
                cls = f"{module}.{m[1]}" if m[2] == "Module" else None
                slots = {}
                continue
            s = _SLOTS.match(line) if cls else None
            if s and cls:
                slots[s[1]] = _names(s[2])
                if len(slots) == 2:  # the printer writes both lines for every module class
                    out[cls] = ModuleDecl(slots["__parameters__"], slots["__buffers__"])
    return out


def _names(text: str) -> tuple[str, ...]:
    try:
        value = ast.literal_eval(text)  # a list of string literals; literal_eval evaluates nothing else
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return ()
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def as_modules(arc: Archive, root: Any) -> Any:
    """The archive's object tree with every declared module object in nn.Module layout. A root that
    is not a module class with a declaration is refused (BadInput) with the torch.jit.load hint."""
    decls = declarations(arc)
    if not isinstance(root, StubObject) or root.class_name not in decls:
        what = root.class_name if isinstance(root, StubObject) else type(root).__name__
        raise BadInput(arc.path, f"a TorchScript archive whose root {what} has no module declaration under code/; "
                                 "statecli reads parameters and buffers of scripted modules only", HINT)
    seen: set[int] = set()
    todo: list[Any] = [root]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, StubObject):
            attrs = x.attrs()
            todo.extend(attrs.values())
            decl = decls.get(x.class_name)
            if decl is not None and isinstance(x.state, dict):
                x.state = _reshaped(attrs, decl, decls)
        elif isinstance(x, Mapping):
            todo.extend(x.values())
        elif isinstance(x, (list, tuple)):
            todo.extend(x)
    return root


def _reshaped(attrs: dict[str, Any], decl: ModuleDecl, decls: dict[str, ModuleDecl]) -> dict[str, Any]:
    params = OrderedDict((k, attrs[k]) for k in decl.parameters if k in attrs)
    buffers = OrderedDict((k, attrs[k]) for k in decl.buffers if k in attrs)
    modules = OrderedDict((k, v) for k, v in attrs.items()
                          if isinstance(v, StubObject) and v.class_name in decls and k not in params and k not in buffers)
    rest = {k: v for k, v in attrs.items() if k not in params and k not in buffers and k not in modules}
    # TorchScript keeps no record of non-persistent buffers: torch.jit.load's state_dict() lists them all.
    return {**rest, "_parameters": params, "_buffers": buffers, "_modules": modules,
            "_non_persistent_buffers_set": set()}
