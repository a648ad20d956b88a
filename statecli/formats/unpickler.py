"""A restricted unpickler that never imports or calls anything: torch's rebuild functions map to
our own record builders and every other global becomes an inert stub that only remembers its
arguments and state."""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from struct import error as struct_error
from typing import Any, BinaryIO

from ..errors import BadInput, UnsafeContent
from ..units import ITEMSIZE, itemsize

# Hard caps: a pickle is untrusted input. Object count is bounded by the pickle's size (every
# object needs at least one opcode), so capping the size caps work and memory.
MAX_PICKLE_BYTES = 1 << 30

# Modules (matched on every dotted prefix) and (module, name) pairs whose use in a pickle means
# loading it would run code. Python 2 names are mapped through _compat_pickle first.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "commands", "popen2", "sys",
    "runpy", "importlib", "imp", "pickle", "_pickle", "cPickle", "pickletools", "shelve",
    "marshal", "shutil", "socket", "pty", "code", "codeop", "ctypes", "_ctypes", "webbrowser",
    "multiprocessing", "asyncio", "threading", "_thread", "signal", "platform", "pdb", "bdb",
    "timeit", "trace", "profile", "cProfile", "dill", "cloudpickle", "joblib", "types",
    "sysconfig", "distutils", "setuptools", "pip", "venv", "ensurepip", "zipimport", "pkgutil",
    "requests", "urllib", "http", "ftplib", "smtplib", "telnetlib", "tempfile", "glob", "io",
    "_io", "fileinput", "gc", "inspect", "ast", "operator", "functools",
    "torch.hub", "torch.jit", "torch._C", "torch.serialization", "torch._dynamo",
    "torch.utils.cpp_extension", "torch.package", "torch._inductor", "numpy.testing",
    "numpy.f2py", "numpy.distutils", "numpy.ctypeslib", "_sqlite3", "sqlite3", "builtins.eval",
    # Gadgets that run commands or code (published scanner bypasses).
    "_operator", "_functools", "_osx_support", "_aix_support", "imaplib", "pydoc", "idlelib",
    "lib2to3", "xmlrpc", "socketserver", "smtpd", "nntplib", "poplib", "mailcap", "site",
    "zipfile", "tarfile", "cgi", "cgitb", "turtle", "tkinter", "doctest",
    "unittest", "test", "concurrent", "atexit", "_posixsubprocess", "_winapi",
    "torch.utils.collect_env", "torch.fx", "torch.utils._config_module", "torch.distributed.rpc",
    "torch.testing", "torch.utils.data", "torch.onnx", "torch.export", "torch.utils.hooks",
})
# Attribute names that, anywhere in a dotted global name, reach code execution.
DANGEROUS_ATTRS = frozenset({
    "system", "popen", "spawn", "spawnl", "spawnv", "execv", "execl", "execve", "fork", "eval", "exec",
    "compile", "__import__", "getattr", "setattr", "__getattribute__", "__globals__", "__builtins__",
    "__subclasses__", "__code__", "__call__", "__reduce__", "__reduce_ex__", "__init__", "__new__",
    "load", "loads", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput",
    "import_module", "_load_from_bytes", "open", "remove", "unlink", "rmtree", "startfile",
})
DANGEROUS_NAMES = frozenset({
    ("builtins", n) for n in (
        "eval", "exec", "execfile", "compile", "open", "__import__", "getattr", "setattr",
        "delattr", "globals", "locals", "vars", "breakpoint", "input", "apply", "file",
        "memoryview", "help", "exit", "quit", "reload", "__loader__", "__builtins__",
    )
} | {
    ("torch", "load"), ("torch", "save"), ("torch", "from_file"), ("torch", "_load_global_deps"),
    ("torch", "hub"), ("torch", "ops"), ("torch", "classes"), ("torch", "_C"),
    ("torch", "jit"), ("torch", "package"), ("torch", "compile"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch.storage", "_load_from_bytes"), ("uuid", "_get_command_stdout"), ("uuid", "_popen"),
    ("uuid", "_ifconfig_getnode"), ("uuid", "_ip_getnode"), ("uuid", "_arp_getnode"), ("uuid", "_lanscan_getnode"),
    ("uuid", "_netstat_getnode"), ("uuid", "_find_mac_near_keyword"), ("uuid", "_find_mac_under_heading"),
    ("torch.storage", "UntypedStorage._load_from_bytes"),
    ("numpy", "load"), ("numpy", "loadtxt"), ("numpy", "fromfile"), ("numpy", "save"),
    ("numpy.lib.npyio", "load"), ("numpy.core.multiarray", "_reconstruct_from_pickle"),
    ("_codecs", "open"), ("codecs", "open"),
})
# Entire packages whose classes are data, not code, that readers of specific formats trust
# (torch.distributed.checkpoint's .metadata dataclasses).
DCP_TRUSTED_PREFIXES = ("torch.distributed.checkpoint.",)

# Storage class names -> dtype.
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128", "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8", "TypedStorage": "uint8",
}
_TENSOR_CLASSES = {f"{n[:-7]}Tensor" for n in _STORAGE_DTYPES if n not in ("UntypedStorage", "TypedStorage")}
_QSCHEMES = {"per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
             "per_channel_symmetric", "per_channel_affine_float_qparams"}
_LAYOUTS = {"strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn", "jagged"}
_MEMORY_FORMATS = {"contiguous_format", "channels_last", "channels_last_3d", "preserve_format"}


def dangerous_reason(module: str, name: str) -> bool:
    """True when the global module.name is known to run code when a pickle is loaded."""
    mod = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if (module, name) in _compat_pickle.NAME_MAPPING:
        mod, name = _compat_pickle.NAME_MAPPING[(module, name)]
    full = f"{mod}.{name}"
    parts = full.split(".")
    for i in range(1, len(parts) + 1):
        if ".".join(parts[:i]) in DANGEROUS_MODULES:
            return True
    for i in range(1, len(parts)):
        if (".".join(parts[:i]), parts[i]) in DANGEROUS_NAMES:
            return True
    if "." in name:
        # Protocol 4 resolves dotted names attribute by attribute: 'logging' + 'os.system' reaches os.
        # Any step that is itself a dangerous module or attribute makes the whole name dangerous.
        for i, part in enumerate(name.split(".")):
            if part in DANGEROUS_ATTRS or any(m.split(".")[0] == part for m in DANGEROUS_MODULES):
                return True
            if (".".join([mod] + name.split(".")[:i]), part) in DANGEROUS_NAMES:
                return True
    return False


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
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.listitems = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> StubObject:
        # getattr(stub, "system")(...) tricks call a stub's result: stay inert and keep reading, so
        # every global of the pickle is seen and named.
        return _CALL_RESULT(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.listitems.append(value)

    def extend(self, values: Any) -> None:
        self.listitems.extend(values)

    def add(self, value: Any) -> None:  # ADDITEMS on a set-like stub
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


_CALL_RESULT = type("CallResult", (StubObject,), {"__stub_name__": "<result of calling a stub>"})


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
    return type(name.rsplit(".", 1)[-1], (StubObject,), {"__stub_name__": f"{module}.{name}", "__module__": "statecli.stub"})


class RestrictedUnpickler(pickle.Unpickler):
    """Reads a torch pickle into TensorRef/StorageRef/StubObject trees without importing anything.

    `storage_resolver(pid)` turns a persistent id into a StorageRef (format-specific); every
    global is recorded in `globals_seen`, those outside torch's weights-only allowlist in
    `untrusted`, and known-dangerous ones in `dangerous`.

    It is the C unpickler (6x faster than pickle._Unpickler on 5,000-tensor files) with
    `find_class` overridden: every GLOBAL, STACK_GLOBAL, INST, OBJ and EXT lookup goes through it,
    and it never imports. The C machine is not recursive, and object count is bounded by the
    pickle's size, which MAX_PICKLE_BYTES caps.
    """

    def __init__(
        self,
        data: bytes | BinaryIO,
        storage_resolver: Callable[[Any], Any],
        trusted_prefixes: tuple[str, ...] = (),
    ) -> None:
        if isinstance(data, bytes):
            if len(data) > MAX_PICKLE_BYTES:
                raise pickle.UnpicklingError(f"pickle of {len(data)} bytes exceeds the {MAX_PICKLE_BYTES}-byte cap")
            data = io.BytesIO(data)
        super().__init__(data, encoding="latin1")
        self._resolver = storage_resolver
        self._trusted_prefixes = trusted_prefixes
        self.globals_seen: list[str] = []
        self.untrusted: list[str] = []
        self.dangerous: list[str] = []
        self._stubs: dict[str, type[StubObject]] = {}

    # -- globals -------------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        if True:  # Python 2 names, as pickle's own find_class maps them (harmless for Python 3 names)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full not in self.globals_seen:
            self.globals_seen.append(full)
        allowed = self._allowed(module, name)
        if allowed is not None:
            return allowed
        if dangerous_reason(module, name):
            if full not in self.dangerous:
                self.dangerous.append(full)
        elif ("." in name or not full.startswith(self._trusted_prefixes)) and full not in self.untrusted:
            self.untrusted.append(full)
        if full not in self._stubs:
            self._stubs[full] = _stub_class(module, name)
        return self._stubs[full]

    def _allowed(self, module: str, name: str) -> Any:
        """The builder for a global torch's weights-only unpickler accepts, else None."""
        full = f"{module}.{name}"
        if full in _BUILDERS:
            return _BUILDERS[full]
        if module == "torch":
            if name in ITEMSIZE:
                return DtypeValue(name)
            if name in _QSCHEMES or name in _LAYOUTS or name in _MEMORY_FORMATS:
                return NamedValue(full)
            if name in _STORAGE_DTYPES:
                return StorageType(_STORAGE_DTYPES[name], name, typed=name != "UntypedStorage")
            if name in _TENSOR_CLASSES:
                return _stub_class(module, name)
        if module == "torch.cuda" and name in _STORAGE_DTYPES:
            return StorageType(_STORAGE_DTYPES[name], f"cuda.{name}", typed=True)
        if module in ("torch.cuda", "torch.cuda.sparse", "torch.sparse") and name in _TENSOR_CLASSES:
            return _stub_class(module, name)
        if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage"):
            return StorageType("uint8", name, typed=name == "TypedStorage")
        return None

    def persistent_load(self, pid: Any) -> Any:
        return self._resolver(pid)

    def load_value(self) -> Any:
        try:
            return self.load()
        except RecursionError as exc:
            raise pickle.UnpicklingError("pickle nests too deeply") from exc


# -- builders for allowlisted globals -----------------------------------------------------------

def _ints(value: Any, what: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of integers: {value!r:.80}")
    return tuple(value)


def _check_view(storage: StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
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
# The weights-only allowlist maps torch.Tensor to a class; our rebuild_from_type_v2 needs its name.
_BUILDERS["torch.Tensor"].__stub_name__ = "torch.Tensor"
_BUILDERS["torch.nn.parameter.Parameter"].__stub_name__ = "torch.nn.parameter.Parameter"  # type: ignore[attr-defined]


def storage_from_pid(pid: Any) -> tuple[StorageType, str, str, int, Any]:
    """Validate a ('storage', type, key, location, numel[, view]) persistent id."""
    if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
        raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if not isinstance(stype, StorageType):
        raise pickle.UnpicklingError(f"persistent id names a non-storage type {stype!r:.80}")
    if not isinstance(key, str) or not isinstance(location, str) or not isinstance(numel, int) or numel < 0:
        raise pickle.UnpicklingError(f"malformed storage record {pid!r:.80}")
    return stype, key, location, numel, pid[5] if len(pid) > 5 else None


def unpickle(data: bytes | BinaryIO, resolver: Callable[[Any], Any], path: str, what: str = "pickle",
             trusted_prefixes: tuple[str, ...] = ()) -> tuple[Any, RestrictedUnpickler]:
    """Run the restricted unpickler over `data`; malformed input becomes BadInput naming `path`."""
    up = RestrictedUnpickler(data, resolver, trusted_prefixes)
    try:
        obj = up.load_value()
    except BadInput:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError, OverflowError, MemoryError, struct_error) as exc:
        if up.dangerous:  # a payload that also breaks the stream is still a payload
            raise UnsafeContent(path, "pickle references code that loading would run: " + ", ".join(up.dangerous),
                                "refusing the file") from exc
        raise BadInput(path, f"corrupt {what}: {exc}".rstrip(": ")) from exc
    return obj, up

