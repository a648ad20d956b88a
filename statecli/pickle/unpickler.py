"""A restricted unpickler that never imports or calls anything: torch's rebuild functions map to
our own record builders and every other global becomes an inert stub that only remembers its
arguments and state."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from struct import error as struct_error
from types import FunctionType
from typing import Any, BinaryIO

from ..errors import BadInput, UnsafeContent
from ..state import Verdict
from ..units import ITEMSIZE, itemsize
from . import verdict as _verdict
from .frames import frame_problems, may_frame
from .inert import (
    DtypeValue,
    InertSet,
    NamedValue,
    SeenGlobal,
    StateDict,
    StorageRef,
    StorageType,
    StubObject,
    TensorRef,
    _GetattrProbe,
    _stub_class,
    constructor,
    judged,
    lenient,
    seal,
)
from .memocheck import stream_memo_problem
from .operands import consumed, refuse_computed_global
from .verdict import LAYOUTS, MEMORY_FORMATS, QSCHEMES, STORAGE_DTYPES, TENSOR_CLASSES, dangerous_reason, normalize

# Hard caps: a pickle is untrusted input. Object count is bounded by the pickle's size (every
# object needs at least one opcode), so capping the size caps work and memory.
MAX_PICKLE_BYTES = 1 << 30
MAX_FRAMED_TAIL = 64 << 20  # read past where the C unpickler stopped, to see what a linear walk reads
_I64 = 1 << 63  # torch stores sizes, strides, numels as int64: a longer int (str() may fail on it) is malformed

# Storage class names -> dtype, and the other allowlisted torch names, live with the verdict.
__all__ = ["DtypeValue", "InertSet", "NamedValue", "RestrictedUnpickler", "SeenGlobal",
           "StateDict", "StorageRef", "StorageType", "StubObject", "TensorRef", "dangerous_reason", "unpickle"]


class RestrictedUnpickler(pickle.Unpickler):
    """Reads a torch pickle into TensorRef/StorageRef/StubObject trees without importing anything.

    `storage_resolver(pid)` turns a persistent id into a StorageRef (format-specific); every
    global is recorded in `refs` (in order, with its verdict from pickle/verdict.py), its name in
    `globals_seen`, the needs-trust ones in `untrusted` and the dangerous ones in `dangerous`.

    It is the C unpickler (6x faster than pickle._Unpickler on 5,000-tensor files) with
    `find_class` overridden: every GLOBAL, STACK_GLOBAL, INST, OBJ and EXT lookup goes through it,
    and it never imports. The C machine is not recursive, and object count is bounded by the
    pickle's size, which MAX_PICKLE_BYTES caps. `lenient` (scan) turns a builder's refusal into an
    inert stub and a note in `problems`, so reading goes on to the end of the stream.
    """

    def __init__(
        self,
        data: bytes | BinaryIO,
        storage_resolver: Callable[[Any], Any],
        trusted: frozenset[str] = frozenset(),
        torchscript: bool = False,
        lenient: bool = False,
    ) -> None:
        if isinstance(data, bytes):
            if len(data) > MAX_PICKLE_BYTES:
                raise pickle.UnpicklingError(f"pickle of {len(data)} bytes exceeds the {MAX_PICKLE_BYTES}-byte cap")
            data = io.BytesIO(data)
        super().__init__(data, encoding="latin1")
        self._source = data  # memocheck walks it before load()
        self._resolver = storage_resolver
        # The C unpickler calls this directly (no method of ours in between): one Python call less
        # per tensor. Set through the base type's descriptor, so no persistent_load method here.
        self.persistent_load = storage_resolver  # type: ignore[method-assign]
        self._trusted = trusted
        self._torchscript = torchscript
        self._lenient = lenient
        self.refs: list[SeenGlobal] = []
        self.problems: list[str] = []
        self._probes: list[_GetattrProbe] = []
        self._stubs: dict[str, type[StubObject]] = {}
        self.stack_globals: list[int] = []  # STACK_GLOBAL offsets the memo walk met (-1: not walked)

    # -- globals -------------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        seen = judged(module, name, self._trusted, self._torchscript)
        # In a TorchScript archive a name torch.jit.load does not resolve itself (compared as written)
        # is a class compiled from code/, even one we have a builder for (builtins.set, _codecs.encode).
        code_class = self._torchscript and _verdict.torchscript_source(module, name) is not None
        module, name = normalize(module, name)
        full = seen.name
        self.refs.append(seen)
        if full == "builtins.getattr" and not self._torchscript:  # TorchScript: a code/ class like any
            probe = _GetattrProbe(seen, self._trusted, self._torchscript)
            self._probes.append(probe)
            return probe
        allowed = None if code_class else self._allowed(module, name)
        if allowed is not None:
            return lenient(allowed, full, self.problems) if self._lenient and callable(allowed) else allowed
        if full not in self._stubs:
            self._stubs[full] = _stub_class(module, name)
        return self._stubs[full]

    def _settle(self) -> None:
        """getattr references get the verdict of their uses, known only once the pickle is read."""
        for probe in self._probes:
            probe.seen.verdict = probe.worst
            probe.seen.detail = probe.reason
        self._probes = []

    def _names(self, v: Verdict) -> list[str]:
        return list(dict.fromkeys(r.name for r in self.refs if r.verdict is v))

    @property
    def globals_seen(self) -> list[str]:
        return list(dict.fromkeys(r.name for r in self.refs))

    @property
    def untrusted(self) -> list[str]:
        return self._names(Verdict.NEEDS_TRUST)

    @property
    def dangerous(self) -> list[str]:
        return self._names(Verdict.DANGEROUS)

    def _allowed(self, module: str, name: str) -> Any:
        """The builder for a global torch's weights-only unpickler accepts, else None."""
        full = f"{module}.{name}"
        if full in _BUILDERS:
            return _BUILDERS[full]
        if module == "torch":
            if name in ITEMSIZE:
                return DtypeValue(name)
            if name in QSCHEMES or name in LAYOUTS or name in MEMORY_FORMATS:
                return NamedValue(full)
            if name in STORAGE_DTYPES:
                return StorageType(STORAGE_DTYPES[name], name, typed=name != "UntypedStorage")
            if name in TENSOR_CLASSES:
                return _stub_class(module, name)
        if module == "torch.cuda" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name], f"cuda.{name}", typed=True)
        if module in ("torch.cuda", "torch.cuda.sparse", "torch.sparse") and name in TENSOR_CLASSES:
            return _stub_class(module, name)
        if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage"):
            return StorageType("uint8", name, typed=name == "TypedStorage")
        return None

    def load_value(self) -> Any:
        try:
            if problem := stream_memo_problem(self._source, self.stack_globals):  # before the C memo grows to a bogus index
                raise pickle.UnpicklingError(problem)
            return self.load()
        except RecursionError as exc:
            raise pickle.UnpicklingError("pickle nests too deeply") from exc
        finally:
            self._settle()


# -- builders for allowlisted globals -----------------------------------------------------------

def _ints(value: Any, what: str) -> tuple[int, ...]:
    if type(value) is tuple:  # the common case, checked without a generator per tensor
        for v in value:
            if type(v) is not int or not -_I64 <= v < _I64:
                break
        else:
            return value
    if isinstance(value, int) and not isinstance(value, bool) and -_I64 <= value < _I64:
        return (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                      and -_I64 <= v < _I64 for v in value):
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of 64-bit integers")
    return tuple(value)


def _check_view(storage: StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
    if offset >= 0 and len(size) == len(stride):  # one loop for a view with no empty dimension
        end = offset + 1
        for s, st in zip(size, stride):
            if s <= 0:
                break
            end += (s - 1) * (st if st >= 0 else -st)
        else:
            if end <= storage.numel:
                return
    if offset < 0 or any(s < 0 for s in size):
        raise pickle.UnpicklingError(f"negative size or offset in tensor view: size={size} offset={offset}")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in length")
    if 0 in size:
        return
    end = offset + sum((s - 1) * abs(st) for s, st in zip(size, stride)) + 1
    if end > storage.numel:
        raise pickle.UnpicklingError(
            f"tensor view (offset {offset}, size {list(size)}, stride {list(stride)}) reaches element "
            f"{end} of a storage holding {storage.numel}"
        )


def _tensor_from(storage: Any, storage_offset: Any, size: Any, stride: Any, dtype: str | None = None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError(f"tensor built from a non-storage object {storage!r:.80}")
    if not isinstance(storage_offset, int):
        raise pickle.UnpicklingError("tensor storage offset is not an integer")
    size_t, stride_t = _ints(size, "size"), _ints(stride, "stride")
    if dtype is not None and not storage.typed:
        # v3 / untyped storage: numel was recorded in bytes.
        if storage.dtype == "uint8" and dtype != "uint8":
            storage = _retype(storage, dtype)
    _check_view(storage, storage_offset, size_t, stride_t)
    return TensorRef(storage, dtype or storage.dtype, size_t, stride_t, storage_offset)


def _retype(storage: StorageRef, dtype: str) -> StorageRef:
    # The same untyped storage can be viewed as several dtypes; keep the shared key, change units.
    item = itemsize(dtype)
    return StorageRef(storage.key, dtype, storage.location, storage.numel // item, storage.typed)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any) -> TensorRef:
    return _tensor_from(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> TensorRef:
    t = _tensor_from(storage, storage_offset, size, stride)
    t.requires_grad = bool(requires_grad) if isinstance(requires_grad, bool) else False
    return t


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> TensorRef:
    if not isinstance(dtype, DtypeValue):
        raise pickle.UnpicklingError("_rebuild_tensor_v3 without a dtype")
    t = _tensor_from(storage, storage_offset, size, stride, dtype.name)
    t.requires_grad = requires_grad is True
    return t


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> TensorRef:
    if not isinstance(data, TensorRef):
        raise pickle.UnpicklingError("Parameter rebuilt from a non-tensor")
    data.is_parameter = True
    data.requires_grad = requires_grad is True
    return data


def _rebuild_qtensor(storage: Any, storage_offset: Any, size: Any, stride: Any, quantizer_params: Any,
                     requires_grad: Any, backward_hooks: Any) -> TensorRef:
    t = _tensor_from(storage, storage_offset, size, stride)
    t.layout = "quantized"
    if isinstance(quantizer_params, tuple):
        t.components = [p for p in quantizer_params if isinstance(p, TensorRef)]
    return t


def _rebuild_sparse_tensor(layout: Any, data: Any) -> TensorRef:
    if not isinstance(layout, NamedValue) or not isinstance(data, tuple):
        raise pickle.UnpicklingError("malformed sparse tensor")
    parts = [d for d in data if isinstance(d, TensorRef)]
    size = next((d for d in reversed(data) if isinstance(d, tuple)), None)
    if not parts or size is None:
        raise pickle.UnpicklingError("malformed sparse tensor")
    values = parts[-1]
    return TensorRef(values.storage, values.dtype, _ints(size, "size"), None, 0,
                     layout=layout.qualname.removeprefix("torch."), components=parts)


def _rebuild_meta_tensor_no_storage(dtype: Any, size: Any, stride: Any, requires_grad: Any = False) -> TensorRef:
    if not isinstance(dtype, DtypeValue):
        raise pickle.UnpicklingError("meta tensor without a dtype")
    return TensorRef(None, dtype.name, _ints(size, "size"), _ints(stride, "stride"), 0, device="meta")


def _rebuild_wrapper_subclass(cls: Any, dtype: Any, size: Any, stride: Any, storage_offset: Any, layout: Any,
                              device: Any, requires_grad: Any) -> TensorRef:
    name = getattr(cls, "__stub_name__", None)
    return TensorRef(None, dtype.name if isinstance(dtype, DtypeValue) else "uint8", _ints(size, "size"),
                     _ints(stride, "stride"), int(storage_offset) if isinstance(storage_offset, int) else 0,
                     device=str(device), subclass=name)


def _rebuild_nested_tensor(buffer: Any, sizes: Any, strides: Any, storage_offsets: Any) -> TensorRef:
    if not isinstance(buffer, TensorRef):
        raise pickle.UnpicklingError("malformed nested tensor")
    buffer.layout = "nested"
    return buffer


def _rebuild_device_tensor_from_cpu_tensor(data: Any, dtype: Any, device: Any, requires_grad: Any) -> TensorRef:
    if not isinstance(data, TensorRef):
        raise pickle.UnpicklingError("malformed device tensor")
    data.device = str(device)
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if not callable(func) or not isinstance(args, tuple):
        raise pickle.UnpicklingError("malformed _rebuild_from_type_v2")
    ret = func(*args)
    name = getattr(new_type, "__stub_name__", None)
    if isinstance(ret, TensorRef) and name not in (None, "torch.Tensor", "torch.nn.parameter.Parameter"):
        ret.subclass = name
        if ret.storage is None and isinstance(state, dict):  # a wrapper subclass: its tensors live in the state
            ret.subclass_state = {str(k): v for k, v in state.items()}
    if isinstance(ret, TensorRef) and name == "torch.nn.parameter.Parameter":
        ret.is_parameter = True
    return ret


def _device(*args: Any) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], int):
        return f"{args[0]}:{args[1]}"
    raise pickle.UnpicklingError(f"malformed torch.device{args!r:.80}")


def _size(*args: Any) -> tuple[int, ...]:
    return _ints(args[0] if args else (), "size") if args else ()


def _get_layout(name: Any) -> NamedValue:
    return NamedValue(str(name))


def _codecs_encode(obj: Any, encoding: str = "utf-8", *_: Any) -> bytes:
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("malformed _codecs.encode")
    return obj.encode(encoding)


def _ordered_dict(*args: Any) -> StateDict:
    return StateDict(*args)


def _parameter(data: Any = None, requires_grad: Any = True) -> Any:
    if isinstance(data, TensorRef):
        data.is_parameter = True
        data.requires_grad = requires_grad is True
    return data


def _counter(*args: Any) -> StateDict:
    return StateDict(*args)


def _set(items: Any = ()) -> InertSet:
    return InertSet(items)


_BUILDERS: dict[str, Any] = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._utils._rebuild_qtensor": _rebuild_qtensor,
    "torch._utils._rebuild_sparse_tensor": _rebuild_sparse_tensor,
    "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta_tensor_no_storage,
    "torch._utils._rebuild_wrapper_subclass": _rebuild_wrapper_subclass,
    "torch._utils._rebuild_nested_tensor": _rebuild_nested_tensor,
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": _rebuild_device_tensor_from_cpu_tensor,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch.nn.parameter.Parameter": _parameter,
    "torch.Tensor": _stub_class("torch", "Tensor"),
    "torch.serialization._get_layout": _get_layout,
    "torch.Size": _size,
    "torch.device": _device,
    "_codecs.encode": _codecs_encode,
    "builtins.bytearray": bytearray,
    "builtins.set": _set,
    "builtins.complex": complex,
    "collections.OrderedDict": _ordered_dict,
    "collections.Counter": _counter,
}
# Names that are classes in torch and Python become classes here too (NEWOBJ needs a class); every
# builder carries its global's name, so getattr on it is judged as getattr on that global.
for _name in ("torch.nn.parameter.Parameter", "torch.Size", "torch.device", "builtins.set", "builtins.bytearray",
              "builtins.complex", "collections.OrderedDict", "collections.Counter"):
    _BUILDERS[_name] = constructor(_name, _BUILDERS[_name])
for _name, _builder in _BUILDERS.items():
    if isinstance(_builder, FunctionType):
        _builder.__stub_name__ = _name  # type: ignore[attr-defined]
seal(*_BUILDERS.values())  # BUILD on one of them must not write into our shared functions


def storage_from_pid(pid: Any) -> tuple[StorageType, str, str, int, Any]:
    """Validate a ('storage', type, key, location, numel[, view]) persistent id."""
    if type(pid) is tuple and len(pid) == 5 and pid[0] == "storage":  # torch.save's own, checked in one go
        _, stype, key, location, numel = pid
        if (type(stype) is StorageType and type(key) is str and type(location) is str and type(numel) is int
                and 0 <= numel < _I64):
            return stype, key, location, numel, None
    if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if not isinstance(stype, StorageType):
        raise pickle.UnpicklingError("persistent id names a non-storage type")
    if not isinstance(key, str) or not isinstance(location, str) or not isinstance(numel, int) or not 0 <= numel < _I64:
        raise pickle.UnpicklingError("malformed storage record")
    return stype, key, location, numel, pid[5] if len(pid) > 5 else None


def unpickle(data: bytes | BinaryIO, resolver: Callable[[Any], Any], path: str, what: str = "pickle",
             trusted: frozenset[str] = frozenset(), torchscript: bool = False) -> tuple[Any, RestrictedUnpickler]:
    """Run the restricted unpickler over `data`; malformed input becomes BadInput naming `path`."""
    up = RestrictedUnpickler(data, resolver, trusted, torchscript)
    start = 0 if isinstance(data, bytes) else data.tell()
    try:
        obj = up.load_value()
    except BadInput:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError, OverflowError, MemoryError, struct_error) as exc:
        _refuse_framing(data, start, path, what)
        refuse_computed_global(data, start, path)
        if up.dangerous:  # a payload that also breaks the stream is still a payload
            raise UnsafeContent(path, "pickle references code that loading would run: " + ", ".join(up.dangerous),
                                "refusing the file") from exc
        raise BadInput(path, f"corrupt {what}: {exc}".rstrip(": ")) from exc
    _refuse_framing(data, start, path, what)
    if up.stack_globals:  # a global chosen while loading may have resolved: check its operands
        refuse_computed_global(data, start, path)
    return obj, up


def _refuse_framing(data: bytes | BinaryIO, start: int, path: str, what: str) -> None:
    """A pickle whose framing the C unpickler and a static walk read differently is refused by every
    reader, as `scan` reports it (pickle/frames.py). Costs a byte search unless a FRAME could be there."""
    head = consumed(data, start)
    if not isinstance(data, bytes) and may_frame(head):
        end = data.tell()
        head += data.read(MAX_FRAMED_TAIL)
        data.seek(end)
    problems = frame_problems(head, what)
    if problems:
        raise UnsafeContent(path, problems[0], "refusing the file (statecli scan lists every finding)")

