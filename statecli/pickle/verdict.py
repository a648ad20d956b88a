"""The one decision on a pickle global: what loading a pickle that names `module.name` could do.

Both the loader (pickle/unpickler.py) and `statecli scan` call `verdict`; SECURITY.md holds the
same table in words. Verdicts are by capability, not by module prefix: a name is dangerous when it
reaches a process, a file, the network, an import, eval/exec or a nested deserialiser, under every
spelling (Python 2 names, private modules, re-exports, dotted protocol-4 names)."""

from __future__ import annotations

import _compat_pickle

from ..state import Verdict
from ..units import ITEMSIZE

# -- safe: torch's weights-only allowlist (the unpickler maps each to an inert builder) ----------
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128", "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8", "TypedStorage": "uint8",
}
TENSOR_CLASSES = {f"{n[:-7]}Tensor" for n in STORAGE_DTYPES if n not in ("UntypedStorage", "TypedStorage")}
QSCHEMES = {"per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
            "per_channel_symmetric", "per_channel_affine_float_qparams"}
LAYOUTS = {"strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn", "jagged"}
MEMORY_FORMATS = {"contiguous_format", "channels_last", "channels_last_3d", "preserve_format"}
BUILDER_NAMES = frozenset({
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor", "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_wrapper_subclass",
    "torch._utils._rebuild_nested_tensor", "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._tensor._rebuild_from_type_v2", "torch.nn.parameter.Parameter", "torch.Tensor",
    "torch.serialization._get_layout", "torch.Size", "torch.device", "_codecs.encode",
    "builtins.bytearray", "builtins.set", "builtins.complex", "collections.OrderedDict", "collections.Counter",
})

# -- safe beyond the allowlist: pure values and combinators whose callees get their own verdict ----
# A combinator adds no capability: partial(f, x)() is f(x), and f is a global the pickle names, so
# f's own verdict decides. getattr is not here: it reaches attributes (see the unpickler's probe).
PURE = frozenset({
    *(f"builtins.{n}" for n in (
        "len", "dict", "list", "tuple", "frozenset", "int", "float", "bool", "str", "bytes", "slice",
        "range", "min", "max", "abs", "sum", "round", "divmod", "enumerate", "zip", "reversed", "sorted",
        "object", "NotImplemented", "Ellipsis", "True", "False", "None")),
    "functools.partial", "_functools.partial", "copyreg._reconstructor", "copy_reg._reconstructor",
    "collections.defaultdict", "collections.deque", "torch._C._VariableFunctionsClass",
})
# Namespaces of pure tensor functions: any public name in them is an op on tensors.
TORCH_OP_NAMESPACES = ("torch._C._nn", "torch._C._VariableFunctions", "torch._C._VariableFunctionsClass",
                       "torch.nn.functional", "torch._C._fft", "torch._C._linalg", "torch._C._special")
# Modules imported into torch.nn.functional's namespace: a module object is not an op.
_NOT_OPS = frozenset({"_Reduction", "_VF", "dataclasses", "grad", "importlib", "math", "np", "torch", "warnings"})
# TorchScript archives: torch.load hands them to torch.jit.load, whose unpickler resolves only these
# names itself (torch/csrc/jit/serialization/unpickler.cpp, Unpickler::readGlobal), compared as
# written (no Python 2 mapping); `torch.<X>Storage` and `torch.<qscheme>` are enums there, any other
# `torch.X` an error. Every other name goes to its type resolver, which compiles the class of that
# name from the archive's own code/ (a class named `builtins.len` is code/builtins.py's `len`) and
# runs its __setstate__: TorchScript code, whatever Python object the name would mean.
TORCHSCRIPT_BUILTINS = frozenset({
    "__main__.TensorID", "__main__.IntList", "torch.jit._pickle.build_tensor_from_id",
    "torch.jit._pickle.restore_type_tag", "torch.jit._pickle.build_intlist", "torch.jit._pickle.build_tensorlist",
    "torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_qtensor", "torch._tensor._rebuild_from_type_v2", "torch._utils._rebuild_sparse_tensor",
    "builtins.complex", "collections.OrderedDict", "torch.device",
})

# -- dangerous -----------------------------------------------------------------------------------
# Modules (matched on every dotted prefix) whose names reach code execution, files or the network.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "commands", "popen2", "sys",
    "runpy", "importlib", "imp", "pickle", "_pickle", "cPickle", "pickletools", "shelve",
    "marshal", "shutil", "socket", "pty", "code", "codeop", "ctypes", "_ctypes", "webbrowser",
    "multiprocessing", "asyncio", "threading", "_thread", "signal", "platform", "pdb", "bdb",
    "timeit", "trace", "profile", "cProfile", "dill", "cloudpickle", "joblib", "types",
    "sysconfig", "distutils", "setuptools", "pip", "venv", "ensurepip", "zipimport", "pkgutil",
    "requests", "urllib", "http", "ftplib", "smtplib", "telnetlib", "tempfile", "glob", "io",
    "_io", "fileinput", "gc", "inspect", "ast", "operator",
    "torch.hub", "torch.jit", "torch._C", "torch.serialization", "torch._dynamo",
    "torch.utils.cpp_extension", "torch.package", "torch._inductor", "numpy.testing",
    "numpy.f2py", "numpy.distutils", "numpy.ctypeslib", "_sqlite3", "sqlite3", "builtins.eval",
    "_operator", "_osx_support", "_aix_support", "imaplib", "pydoc", "idlelib",
    "lib2to3", "xmlrpc", "socketserver", "smtpd", "nntplib", "poplib", "mailcap", "site",
    "zipfile", "tarfile", "cgi", "cgitb", "turtle", "tkinter", "doctest",
    "unittest", "test", "concurrent", "atexit", "_posixsubprocess", "_winapi",
    "torch.utils.collect_env", "torch.fx", "torch.utils._config_module", "torch.distributed.rpc",
    "torch.testing", "torch.utils.data", "torch.onnx", "torch.export", "torch.utils.hooks",
    # File and network capabilities: logging handlers create files and open sockets at construction.
    "logging.handlers", "logging.config", "mmap", "dbm", "urllib3", "httpx", "aiohttp",
    "pandas.io", "h5py", "yaml", "jsonpickle", "numpy.lib._npyio_impl", "numpy.lib.npyio",
    "numpy.lib.format", "numpy.lib._datasource", "numpy.core.memmap",
    "numpy._core.memmap",
})
# functools is dangerous apart from partial (reduce, cache wrappers and singledispatch reach callees
# only through partial-like rules we do not model); partial is in PURE.
_DANGEROUS_UNLESS_PURE = frozenset({"functools", "_functools"})
# Final names that load a nested pickle or touch a file, in any module (np.load, pandas.read_pickle,
# numpy.lib._npyio_impl.load, torch.from_file, logging.FileHandler ...): private spellings alike.
DANGEROUS_FINAL = frozenset({
    "load", "loads", "load_pickle", "read_pickle", "_load_from_bytes", "unpickle", "loadtxt", "genfromtxt",
    "fromfile", "from_file", "memmap", "open_memmap", "tofile", "savetxt", "savez", "savez_compressed",
    "load_state_dict_from_url", "load_url", "_reconstruct_from_pickle", "_rebuild_device_tensor_from_numpy",
    "FileHandler", "RotatingFileHandler", "TimedRotatingFileHandler", "WatchedFileHandler", "SocketHandler",
    "DatagramHandler", "SysLogHandler", "SMTPHandler", "HTTPHandler", "NTEventLogHandler", "fileConfig",
    "basicConfig",  # logging.basicConfig(filename=...) creates the file
    "dictConfig", "_get_command_stdout", "_popen", "_ifconfig_getnode", "_ip_getnode", "_arp_getnode",
    "_lanscan_getnode", "_netstat_getnode", "_find_mac_near_keyword", "_find_mac_under_heading",
    "system", "popen", "spawn", "spawnl", "spawnv", "execv", "execl", "execve", "fork", "eval", "exec",
    "compile", "__import__", "getoutput", "getstatusoutput", "check_output", "check_call", "import_module",
    "startfile", "rmtree", "unlink", "remove", "save", "write_text", "write_bytes", "touch",
    "torch_save_to_dcp", "dcp_to_torch_save",
})
# Attribute names that, as a step of a dotted name, reach code execution.
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
    ("numpy", "load"), ("numpy", "loadtxt"), ("numpy", "fromfile"), ("numpy", "save"),
    ("_codecs", "open"), ("codecs", "open"), ("logging", "FileHandler"),
})
# The classes torch.distributed.checkpoint writes in `.metadata` (torch 2.x, found by saving plain,
# nested, optimizer, bytes and two-rank DTensor state dicts), trusted by exact name only: the package
# also re-exports os, pickle, sys and torch_save_to_dcp (which torch.loads a path), and pathlib holds
# os, sys and operator.attrgetter. These dataclasses only store their fields when unpickled.
_DCP = "torch.distributed.checkpoint."
DCP_TRUSTED = frozenset({
    *(f"{_DCP}metadata.{n}" for n in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")),
    f"{_DCP}filesystem._StorageInfo",
    # StorageMeta.checkpoint_id is the path the writer was given (PosixPath on Linux/macOS).
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    "pathlib._local.PosixPath", "pathlib._local.WindowsPath",
})
# pathlib: constructing a path object is data; every other name (a function, a module, a method of a
# path class such as `Path.touch` or `PosixPath.write_text`) reads or writes files.
_PATH_CLASSES = ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath")
PATH_CONSTRUCTORS = frozenset({f"pathlib.{c}" for c in _PATH_CLASSES} | {f"pathlib._local.{c}" for c in _PATH_CLASSES})
# Namespaces whose members other than their data classes do file I/O or unpickle: only the exact
# names listed are not dangerous (torch.distributed.checkpoint reads, writes and torch.loads files).
_DATA_ONLY_NAMESPACES: tuple[tuple[str, frozenset[str]], ...] = (
    ("pathlib", PATH_CONSTRUCTORS),
    (_DCP.rstrip("."), DCP_TRUSTED),
)
# Module prefixes whose names matching these prefixes read or write files (pandas.read_pickle, .to_csv).
_FILE_IO_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (("pandas", ("read_", "to_")),)


def normalize(module: str, name: str) -> tuple[str, str]:
    """Python 2 names, mapped as pickle's own find_class (and torch's weights-only loader) maps them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def is_weights_only(module: str, name: str) -> bool:
    """In torch's weights-only allowlist (after `normalize`): the unpickler has a builder for it."""
    full = f"{module}.{name}"
    if full in BUILDER_NAMES:
        return True
    if module == "torch":
        return (name in ITEMSIZE or name in QSCHEMES or name in LAYOUTS or name in MEMORY_FORMATS
                or name in STORAGE_DTYPES or name in TENSOR_CLASSES)
    if module == "torch.cuda":
        return name in STORAGE_DTYPES or name in TENSOR_CLASSES
    if module in ("torch.cuda.sparse", "torch.sparse"):
        return name in TENSOR_CLASSES
    return module == "torch.storage" and name in ("UntypedStorage", "TypedStorage")


def is_dangerous(module: str, name: str) -> bool:
    """True when the global module.name (after `normalize`) reaches code, files or the network."""
    full = f"{module}.{name}"
    parts = full.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in DANGEROUS_MODULES:
            return True
        if prefix in _DANGEROUS_UNLESS_PURE and full not in PURE:
            return True
    for i in range(1, len(parts)):
        if (".".join(parts[:i]), parts[i]) in DANGEROUS_NAMES:
            return True
    if parts[-1] in DANGEROUS_FINAL:
        return True
    for space, data_names in _DATA_ONLY_NAMESPACES:
        if (full == space or full.startswith(space + ".")) and full not in data_names:
            return True
    for space, prefixes in _FILE_IO_PREFIXES:
        if full.startswith(space + ".") and parts[-1].startswith(prefixes):
            return True
    if "." in name:
        # Protocol 4 resolves dotted names attribute by attribute: 'logging' + 'os.system' reaches os.
        steps = name.split(".")
        for i, part in enumerate(steps):
            if part in DANGEROUS_ATTRS or part.startswith("__") or any(m.split(".")[0] == part for m in DANGEROUS_MODULES):
                return True
            if (".".join([module] + steps[:i]), part) in DANGEROUS_NAMES:
                return True
    return False


def is_torch_op(module: str, name: str) -> bool:
    """A public function of a namespace of tensor ops (torch._C._nn.gelu, F.silu, torch.tanh's class)."""
    return (module in TORCH_OP_NAMESPACES and name.isidentifier() and not name.startswith("_")
            and name not in _NOT_OPS)


def verdict(module: str, name: str, trusted: frozenset[str] = frozenset(), torchscript: bool = False) -> Verdict:
    """What loading a pickle naming `module.name` could do. `trusted`: exact qualified names of data
    classes a format trusts (DCP_TRUSTED); `torchscript`: the pickle belongs to a TorchScript archive."""
    if torchscript:
        return torchscript_verdict(module, name, trusted)
    module, name = normalize(module, name)
    full = f"{module}.{name}"
    if is_weights_only(module, name) or full in PURE:
        return Verdict.SAFE
    # Checked before the module rules (torch._C is dangerous as a whole), never for a dangerous name.
    if is_torch_op(module, name) and name not in DANGEROUS_FINAL and ("torch", name) not in DANGEROUS_NAMES:
        return Verdict.SAFE
    if is_dangerous(module, name):
        return Verdict.DANGEROUS
    if full in trusted:
        return Verdict.SAFE
    return Verdict.NEEDS_TRUST


def torchscript_verdict(module: str, name: str, trusted: frozenset[str] = frozenset()) -> Verdict:
    """A global in a TorchScript archive's pickle, as torch.jit.load resolves it: its own builtins
    are safe; `torch.X` is an enum or a load error (Python's verdict, never code/); any other name is
    a class compiled from code/: needs trust at least, dangerous where Python's name already is."""
    if f"{module}.{name}" in TORCHSCRIPT_BUILTINS:
        return Verdict.SAFE
    python = verdict(module, name, trusted)
    if module == "torch" or python is Verdict.DANGEROUS:
        return python
    return Verdict.NEEDS_TRUST


def torchscript_source(module: str, name: str) -> str | None:
    """The code/ file torch.jit.load compiles the class `module.name` from (None for its builtins)."""
    if module == "torch" or f"{module}.{name}" in TORCHSCRIPT_BUILTINS:
        return None
    return "code/" + module.replace(".", "/") + ".py"


def dangerous_reason(module: str, name: str) -> bool:
    """True when the global module.name is known to run code when a pickle is loaded (any spelling)."""
    return verdict(module, name) is Verdict.DANGEROUS
