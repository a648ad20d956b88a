"""The inert values the no-execution unpickler builds: tensor/storage records, dtype and enum values,
stub classes for every global it refuses to import, and the probe `builtins.getattr` becomes."""

from __future__ import annotations

import pickle
import types
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any

from ..state import Verdict
from ..units import itemsize
from .verdict import DANGEROUS_ATTRS, normalize, torchscript_source, verdict


class _Inert:
    """Base of every value the unpickler builds: BUILD never reaches a real object's __dict__."""

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"BUILD applied to {type(self).__name__}")


@dataclass(eq=False)
class DtypeValue(_Inert):
    name: str

    def __repr__(self) -> str:
        return f"torch.{self.name}"


@dataclass(eq=False)
class NamedValue(_Inert):
    """A torch enum-like global (layout, qscheme, memory format)."""

    qualname: str

    def __repr__(self) -> str:
        return self.qualname


@dataclass(eq=False)
class StorageType(_Inert):
    dtype: str
    name: str
    typed: bool


@dataclass(eq=False)
class StorageRef(_Inert):
    """A storage named by a persistent id; no bytes read. `numel` is in elements of `dtype`."""

    key: str
    dtype: str
    location: str
    numel: int
    typed: bool

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)


@dataclass(eq=False)
class TensorRef(_Inert):
    storage: StorageRef | None
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...] | None
    storage_offset: int
    requires_grad: bool = False
    layout: str = "strided"
    device: str | None = None  # overrides the storage location (meta, wrapper subclasses)
    is_parameter: bool = False
    subclass: str | None = None
    components: list[TensorRef] = field(default_factory=list)  # sparse/qparam pieces
    # A wrapper subclass's pickled state (torchao's qdata, scale, block_size...): formats/quant reads it.
    subclass_state: dict[str, Any] | None = None

    @property
    def location(self) -> str:
        if self.device is not None:
            return self.device
        return self.storage.location if self.storage is not None else "cpu"


class StubObject(_Inert):
    """An instance of a global we refuse to import. Keeps what the pickle gave it, runs nothing."""

    __stub_name__ = "?"

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: dict[Any, Any]
    listitems: list[Any]

    # NEWOBJ calls __new__ without __init__, REDUCE calls both: record the arguments in __new__.
    def __new__(cls, *args: Any, **kwargs: Any) -> StubObject:
        _mark_escapes(args)
        _mark_escapes(kwargs.values())
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.listitems = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> StubObject:
        # getattr(stub, "system")(...) tricks call a stub's result: stay inert and keep reading, so
        # every global of the pickle is seen and named.
        return _CALL_RESULT(*args, **kwargs)

    def _build(self, state: Any) -> None:
        _mark_escapes((state,))
        self.state = state

    __setstate__: Any = None  # set below: BUILD on an instance or on the stub class itself

    def __setitem__(self, key: Any, value: Any) -> None:
        _mark_escapes((key, value))
        self.items[key] = value

    def append(self, value: Any) -> None:
        _mark_escapes((value,))
        self.listitems.append(value)

    def extend(self, values: Any) -> None:
        values = list(values)
        _mark_escapes(values)
        self.listitems.extend(values)

    def add(self, value: Any) -> None:  # ADDITEMS on a set-like stub
        _mark_escapes((value,))
        self.listitems.append(value)

    @property
    def class_name(self) -> str:
        return type(self).__stub_name__

    def attrs(self) -> dict[str, Any]:
        """The instance dict the object would have had (BUILD state or dict-like args)."""
        st = self.state
        if isinstance(st, tuple) and len(st) == 2 and (st[0] is None or isinstance(st[0], dict)):
            merged: dict[str, Any] = {}
            for part in st:
                if isinstance(part, dict):
                    merged.update(part)
            return merged
        return st if isinstance(st, dict) else {}

    def __repr__(self) -> str:
        return f"<{self.class_name}>"


class _BuildState:
    """BUILD calls `__setstate__` of what it is applied to. A stub instance records the state. A stub
    class stands for a global that may be a function, where the C unpickler's BUILD sets __dict__
    items (data): the state is looked at for escaping getattr probes, then dropped, and reading goes
    on as the loader's does (it never reaches our classes)."""

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return _mark_build
        return obj._build


def _mark_build(state: Any) -> None:
    _mark_escapes((state,))


def seal(*builders: Any) -> Any:
    """BUILD on a global that is a function sets items of its __dict__ (C unpickler): on our shared
    builders that would outlive the load (a slot state's setattr could even change their defaults),
    so a Python function's __setstate__ looks at the state and drops it, as a stub class's does.
    Returns the first builder."""
    for builder in builders:
        if isinstance(builder, types.FunctionType):
            builder.__setstate__ = _mark_build  # type: ignore[attr-defined]
    return builders[0]


StubObject.__setstate__ = _BuildState()
_CALL_RESULT: type[StubObject] = type("CallResult", (StubObject,), {"__stub_name__": "<result of calling a stub>"})


class StateDict(OrderedDict):  # type: ignore[type-arg]
    """An OrderedDict that keeps BUILD state (state_dict()'s `_metadata`) instead of setattr."""

    pickled_state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state

    @property
    def torch_metadata(self) -> Any:
        st = self.pickled_state
        return st.get("_metadata") if isinstance(st, dict) else None


class InertSet(set):  # type: ignore[type-arg]
    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("BUILD applied to set")


def _stub_class(module: str, name: str) -> type[StubObject]:
    """The inert class a refused global becomes; str/bytes/int make real values from plain arguments."""
    ns: dict[str, Any] = {"__stub_name__": f"{module}.{name}", "__module__": "statecli.stub"}
    kind = _VALUE_TYPES.get(f"{module}.{name}")
    if kind is not None:
        ns["__new__"] = _value_new(kind)
    return type(name.rsplit(".", 1)[-1], (StubObject,), ns)


# builtins.str/bytes/int called with plain arguments give the real value, as the loader's call does:
# STACK_GLOBAL takes only an exact str, so `builtins.str('os'), builtins.str('system')` must decode
# as os.system. Never a size to allocate (bytes(10**12)), no codec beyond these, digits bounded by
# Python's own int limit (ValueError: the stub stays).
_CODECS = frozenset({"utf-8", "utf8", "latin1", "latin-1", "ascii"})
_SCALARS = (str, int, float, bool)


def _plain_args(kind: type, args: tuple[Any, ...]) -> bool:
    if not args:
        return True
    if kind is int:
        return (len(args) == 1 and type(args[0]) in _SCALARS) or (
            len(args) == 2 and type(args[0]) is str and type(args[1]) is int)
    text = len(args) in (2, 3) and all(type(a) is str for a in args[1:]) and args[1] in _CODECS
    if kind is str:
        return (len(args) == 1 and type(args[0]) in _SCALARS) or (type(args[0]) is bytes and text)
    return (len(args) == 1 and type(args[0]) is bytes) or (type(args[0]) is str and text)


def _value_new(kind: type) -> Any:
    def new(cls: type[StubObject], *args: Any, **kwargs: Any) -> Any:
        if not kwargs and _plain_args(kind, args):
            try:
                return kind(*args)
            except (ValueError, TypeError, UnicodeError, LookupError, OverflowError):
                pass
        return StubObject.__new__(cls, *args, **kwargs)

    return new


_VALUE_TYPES: dict[str, type] = {"builtins.str": str, "builtins.bytes": bytes, "builtins.int": int}


def judged(module: str, name: str, trusted: frozenset[str], torchscript: bool) -> SeenGlobal:
    """A global as the unpickler meets it: judged as written (torch.jit.load applies no Python 2
    mapping), named after Python's mapping; a TorchScript class names the code/ file it runs."""
    v = verdict(module, name, trusted, torchscript)
    source = torchscript_source(module, name) if torchscript else None
    m, n = normalize(module, name)
    return SeenGlobal(f"{m}.{n}", v, f"TorchScript class compiled from {source}" if source else "")


@dataclass
class SeenGlobal:
    """One global reference as the C unpickler resolved it (after Python 2 name mapping)."""

    name: str
    verdict: Verdict
    detail: str = ""  # for getattr: what it reached ("torch._C._VariableFunctionsClass.tanh")


class _GetattrProbe:
    """What `builtins.getattr` becomes: called with a constant, non-dunder name it returns an inert
    stub named like the dotted global it reaches (judged by the same verdict); any other use (a
    computed name, a dunder, handed to another callable) makes the reference dangerous."""

    def __init__(self, seen: SeenGlobal, trusted: frozenset[str], torchscript: bool) -> None:
        self.seen, self.trusted, self.torchscript = seen, trusted, torchscript
        self.worst = Verdict.SAFE  # never called: the function object is inert data
        self.reason = ""

    def _judge(self, v: Verdict, reason: str) -> None:
        if v.rank > self.worst.rank:
            self.worst, self.reason = v, reason

    def escaped(self) -> None:
        self._judge(Verdict.DANGEROUS, "handed to another callable")

    def __call__(self, obj: Any = None, name: Any = None, *default: Any) -> Any:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("__") or name in DANGEROUS_ATTRS:
            self._judge(Verdict.DANGEROUS, f"attribute {name!r:.40}")
            return _CALL_RESULT()
        # A global: a stub class, or one of the builders statecli implements as a class or function
        # (Parameter, OrderedDict, torch.Size, _rebuild_tensor_v2): getattr(Parameter, "mro") is the
        # dotted global "torch.nn.parameter.Parameter.mro", judged by the one verdict (needs trust).
        target = getattr(obj, "__stub_name__", None) if isinstance(obj, (type, FunctionType)) else None
        if isinstance(obj, type) and target is None:
            self._judge(Verdict.DANGEROUS, f"getattr on {obj!r:.40}")
            return _CALL_RESULT()
        if target is not None:
            # getattr(global, "a") reaches what the dotted global "module.qual.a" reaches.
            module, _, qual = str(target).rpartition(".")
            v = verdict(f"{module}.{qual}" if module else qual, name, self.trusted, self.torchscript)
            self._judge(v, f"{target}.{name}")
            if not self.reason:
                self.reason = f"{target}.{name}"
            return _stub_class(str(target), name)
        if isinstance(obj, (_GetattrProbe, _Inert)) and not isinstance(obj, StubObject):
            self._judge(Verdict.DANGEROUS, f"getattr on {type(obj).__name__}")
            return _CALL_RESULT()
        if isinstance(obj, StubObject):
            # A method of an instance built by the pickle: stored (a bound-method hook) it is data;
            # called while loading (getattr(PosixPath(p), "touch")()) it runs that class's code.
            return _BoundAttribute(self, obj, name)
        # A plain value's attribute (a dict's, a str's): kept, it is data; called while loading it runs
        # that method, which nothing here models: needs trust at least.
        return _BoundAttribute(self, obj, name, Verdict.NEEDS_TRUST)


class _BoundAttribute(StubObject):
    """getattr(instance, name): inert until called; a call makes the getattr reference dangerous."""

    __stub_name__ = "<result of calling a stub>"

    probe: _GetattrProbe
    on_call: Verdict

    def __new__(cls, probe: _GetattrProbe, obj: Any, name: str, on_call: Verdict = Verdict.DANGEROUS) -> _BoundAttribute:
        out = object.__new__(cls)
        out.args, out.kwargs, out.state, out.items, out.listitems = (obj, name), {}, None, {}, []
        out.probe, out.on_call = probe, on_call
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> StubObject:
        owner = getattr(type(self.args[0]), "__stub_name__", type(self.args[0]).__name__)
        self.probe._judge(self.on_call, f"{owner}.{self.args[1]}() called while loading")
        return _CALL_RESULT(*args, **kwargs)


def _mark_escapes(values: Any, depth: int = 0) -> None:
    """A getattr probe handed to a stub (partial, map, a user class) could be called by it."""
    for v in values:
        if isinstance(v, _GetattrProbe):
            v.escaped()
        elif depth < 3 and isinstance(v, (tuple, list)):
            _mark_escapes(v, depth + 1)
        elif depth < 3 and isinstance(v, dict):
            _mark_escapes(list(v.keys()) + list(v.values()), depth + 1)


def lenient(builder: Any, full: str, problems: list[str]) -> Any:
    """`builder` for scan: a refusal of malformed arguments becomes a note in `problems` and an inert
    stub, so reading goes on to the end of the stream."""
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return builder(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a builder refusing malformed arguments
            problems.append(f"{full}: {exc}")
            return _CALL_RESULT(*args)

    if isinstance(builder, type):
        return constructor(full, call)  # still a class: NEWOBJ reads in scan as in the loader
    call.__stub_name__ = full  # type: ignore[attr-defined]
    return seal(call)


class Constructor:
    """Base of the builders for allowlisted classes: a class (NEWOBJ, NEWOBJ_EX and REDUCE all accept
    it, as they accept the real OrderedDict, Parameter, torch.Size) whose construction is the builder."""

    __stub_name__ = "?"


def constructor(full: str, build: Callable[..., Any]) -> type:
    """`full`'s builder as a class: NEWOBJ's cls.__new__(cls, *args) and REDUCE's cls(*args) both
    return build(*args) (not an instance of the class, so __init__ never runs)."""
    def new(cls: type, *args: Any, **kwargs: Any) -> Any:
        return build(*args, **kwargs)

    return type(full.rsplit(".", 1)[-1], (Constructor,), {"__new__": new, "__stub_name__": full,
                                                           "__module__": "statecli.builder"})
