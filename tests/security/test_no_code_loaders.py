"""No loader that can run a checkpoint's code is ever called by statecli: a walk of the package's AST
(calls and references in code, not text in docstrings) for pickle.load(s) in any spelling, the stdlib
Unpickler, torch.load without weights_only=True, torch.jit.load, torch's DCP reader and converters,
and from_pretrained without trust_remote_code=False. The checker is tested on a source string holding
each banned call, so a checker that finds nothing fails too."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import statecli

PICKLE_MODULES = ("pickle", "_pickle", "cPickle", "dill", "joblib")
# Loads that run whatever the bytes name: banned however they are spelled (alias, from-import, reference).
ALWAYS_BANNED = {f"{m}.{f}" for m in PICKLE_MODULES for f in ("load", "loads", "_load", "_loads")} | {
    "pickle.Unpickler.load", "_pickle.Unpickler.load", "pickle._Unpickler.load",
    "torch.jit.load", "torch.jit._serialization.load", "torch.jit._load_for_lite_interpreter",
    "torch.package.PackageImporter", "pandas.read_pickle", "numpy.lib.format.read_array",
    "transformers.dynamic_module_utils.get_class_from_dynamic_module",
    "torch.jit.mobile._load_for_lite_interpreter", "torch._C.import_ir_module",
    "torch._C._import_ir_module_from_package", "torch.serialization._legacy_load", "torch.serialization._load",
    "torch.load_state_dict_from_url", "torch.hub.load", "torch.hub.load_state_dict_from_url",
}
# Modules whose loaders are banned when reached dynamically: getattr(pickle, "loads"),
# sys.modules["pickle"], importlib.import_module("pickle").
DYNAMIC_MODULES = (*PICKLE_MODULES, "torch", "torch.serialization", "torch.jit", "torch.distributed.checkpoint")
STDLIB_UNPICKLERS = {"pickle.Unpickler", "_pickle.Unpickler", "pickle._Unpickler", "cPickle.Unpickler"}
DCP = "torch.distributed.checkpoint"
DCP_LOADERS = ("load", "load_state_dict", "_load_state_dict", "dcp_to_torch_save", "torch_save_to_dcp")
# Every reader and loader of torch.distributed.checkpoint unpickles `.metadata` or items with
# weights_only=False: FileSystemReader(p).read_metadata(), state_dict_loader.* and the like.
DCP_READER_MODULES = (f"{DCP}.state_dict_loader", f"{DCP}.filesystem.FileSystemReader", f"{DCP}.FileSystemReader",
                      f"{DCP}._fsspec_filesystem", f"{DCP}.format_utils", f"{DCP}.hf_storage",
                      f"{DCP}._hf_storage", f"{DCP}.HuggingFaceStorageReader")
# Keywords that, true or not a literal False, let a library run code or unpickle.
OPT_IN_KEYWORDS = {"trust_remote_code": False, "allow_pickle": False}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    name: str  # the banned callee, resolved through imports ("torch.distributed.checkpoint.load")
    why: str


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> qualified name, for every import anywhere in the module (function-level ones too)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _qualified(node: ast.AST, names: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(names.get(node.id, node.id))
    return ".".join(reversed(parts))


def _keyword_is(call: ast.Call, key: str, value: bool) -> bool:
    """`key=value` is passed as a literal (a **kwargs could say anything: not proven)."""
    return any(k.arg == key and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def _unsafe_unpicklers(tree: ast.AST, names: dict[str, str]) -> set[str]:
    """Stdlib Unpickler classes, and this module's subclasses of them that keep the stdlib find_class."""
    out = set(STDLIB_UNPICKLERS)
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name not in out:
                bases = {_qualified(b, names) for b in node.bases}
                own_find_class = any(isinstance(f, ast.FunctionDef) and f.name == "find_class"
                                     and not _delegates_find_class(f) for f in node.body)
                if bases & out and not own_find_class:
                    out.add(node.name)
                    changed = True
    return out


def _delegates_find_class(func: ast.FunctionDef) -> bool:
    """A find_class that hands names to super().find_class (or a base's) imports what they name."""
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and node.attr == "find_class":
            base = node.value
            if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
                return True
            if isinstance(base, ast.Name | ast.Attribute) and not (isinstance(base, ast.Name) and base.id == "self"):
                return True
    return False


def _dynamic_module(node: ast.AST, names: dict[str, str]) -> str | None:
    """The module a dynamic spelling reaches: sys.modules["pickle"], importlib.import_module("pickle"),
    __import__("pickle"); "<computed>" for a name that is not a literal (a user's model file is imported
    on purpose: only a literal loader module is banned)."""
    if isinstance(node, ast.Subscript) and _qualified(node.value, names) == "sys.modules":
        key = node.slice
        return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else "<computed>"
    if isinstance(node, ast.Call) and _qualified(node.func, names) in ("importlib.import_module", "__import__",
                                                                     "builtins.__import__"):
        arg = node.args[0] if node.args else None
        return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "<computed>"
    return None


def _dynamic_finding(node: ast.AST, names: dict[str, str], path: str) -> Finding | None:
    """getattr(pickle, "loads"), getattr(pickle, name), getattr(torch, "load"), sys.modules["pickle"].loads
    and importlib.import_module("pickle").load."""
    if isinstance(node, ast.Call) and _qualified(node.func, names) in ("getattr", "builtins.getattr") and node.args:
        target = _qualified(node.args[0], names) or _dynamic_module(node.args[0], names) or ""
        attr = node.args[1] if len(node.args) > 1 else None
        if target in DYNAMIC_MODULES or target.startswith(tuple(m + "." for m in DYNAMIC_MODULES)):
            name = f"{target}.{attr.value}" if isinstance(attr, ast.Constant) else f"{target}.<computed>"
            computed = not isinstance(attr, ast.Constant) and target in PICKLE_MODULES  # any name is a load
            if computed or name in ALWAYS_BANNED or name in TORCH_LOADS:
                return Finding(path, node.lineno, name, "a loader reached through getattr")
    module = _dynamic_module(node, names)
    if module in DYNAMIC_MODULES:
        return Finding(path, getattr(node, "lineno", 0), f"{module} (dynamic import)",
                       "a loader module reached dynamically")
    return None


def _opt_in(call: ast.Call) -> str | None:
    """A keyword such as trust_remote_code or allow_pickle passed as anything but a literal False."""
    for k in call.keywords:
        if k.arg in OPT_IN_KEYWORDS and not (isinstance(k.value, ast.Constant)
                                             and k.value.value is OPT_IN_KEYWORDS[k.arg]):
            return k.arg
    return None


def check_source(source: str, path: str = "<string>") -> list[Finding]:
    """Every banned load in `source`: calls, and references that could be called through an alias."""
    tree = ast.parse(source, path)
    names = _imports(tree)
    unpicklers = _unsafe_unpicklers(tree, names)
    out: list[Finding] = []
    called: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called.add(id(node.func))
        name = _qualified(node.func, names) or ""
        last = name.rpartition(".")[2] or (node.func.attr if isinstance(node.func, ast.Attribute) else "")
        if (dynamic := _dynamic_finding(node, names, path)) is not None:
            out.append(dynamic)
        elif name in ALWAYS_BANNED:
            out.append(Finding(path, node.lineno, name, "runs the code its input names"))
        elif (key := _opt_in(node)) is not None:
            out.append(Finding(path, node.lineno, name, f"{key} not passed as a literal False"))
        elif name.startswith(DCP_READER_MODULES) or last == "read_metadata":
            out.append(Finding(path, node.lineno, name or ast.unparse(node.func),
                               "torch's DCP reader unpickles with weights_only=False"))
        elif name in unpicklers:
            out.append(Finding(path, node.lineno, name, "an Unpickler with the stdlib find_class imports anything"))
        elif name.startswith(DCP + ".") and last in DCP_LOADERS or last in DCP_LOADERS[3:]:
            out.append(Finding(path, node.lineno, name, "torch's DCP reader unpickles with weights_only=False"))
        elif name in TORCH_LOADS and not _keyword_is(node, "weights_only", True):
            out.append(Finding(path, node.lineno, name, "torch.load without weights_only=True"))
        elif last == "from_pretrained" and not _keyword_is(node, "trust_remote_code", False):
            out.append(Finding(path, node.lineno, name, "from_pretrained without trust_remote_code=False"))
    for node in ast.walk(tree):  # `f = pickle.loads; f(data)`: a reference to an always-banned load
        if isinstance(node, ast.Attribute | ast.Name) and id(node) not in called and isinstance(node.ctx, ast.Load):
            name = _qualified(node, names) or ""
            if name in ALWAYS_BANNED or name.startswith(DCP + ".") and name.rpartition(".")[2] in DCP_LOADERS:
                out.append(Finding(path, node.lineno, name, "a reference to a loader that runs code"))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _dynamic_module(node, names):
            found = _dynamic_finding(node, names, path)
            if found is not None:
                out.append(found)
    return out


def package_findings() -> list[Finding]:
    root = Path(statecli.__file__).parent
    return [f for p in sorted(root.rglob("*.py"))
            for f in check_source(p.read_text(encoding="utf-8"), str(p.relative_to(root.parent)))]


def test_package_calls_no_code_running_loader() -> None:
    found = package_findings()
    assert not found, "\n".join(f"{f.path}:{f.line}: {f.name}: {f.why}" for f in found)


BANNED_SOURCES = [
    ("import pickle\npickle.load(f)", "pickle.load"),
    ("import pickle as p\np.loads(b)", "pickle.loads"),
    ("from pickle import loads as l\nl(b)", "pickle.loads"),
    ("import _pickle\n_pickle.loads(b)", "_pickle.loads"),
    ("import cPickle\ncPickle.load(f)", "cPickle.load"),
    ("import pickle\npickle.Unpickler(f).load()", "pickle.Unpickler"),
    ("from _pickle import Unpickler\nu = Unpickler(f)\nu.load()", "_pickle.Unpickler"),
    ("import pickle\nclass U(pickle.Unpickler):\n    pass\nU(f).load()", "U"),
    ("import pickle\nf = pickle.loads\nf(b)", "pickle.loads"),
    ("import torch\ntorch.load(p)", "torch.load"),
    ("import torch\ntorch.load(p, weights_only=False)", "torch.load"),
    ("import torch\ntorch.load(p, **kw)", "torch.load"),
    ("from torch import load\nload(p, map_location='cpu')", "torch.load"),
    ("import torch\ntorch.jit.load(p)", "torch.jit.load"),
    ("import torch.distributed.checkpoint as dcp\ndcp.load(sd, checkpoint_id=p)", f"{DCP}.load"),
    ("from torch.distributed.checkpoint import load\nload(sd)", f"{DCP}.load"),
    ("from torch.distributed.checkpoint.format_utils import dcp_to_torch_save\ndcp_to_torch_save(a, b)",
     f"{DCP}.format_utils.dcp_to_torch_save"),
    ("import torch\ntorch.distributed.checkpoint.format_utils.torch_save_to_dcp(a, b)",
     f"{DCP}.format_utils.torch_save_to_dcp"),
    ("import torch.distributed.checkpoint as dcp\nf = dcp.load", f"{DCP}.load"),
    ("import transformers\ntransformers.AutoConfig.from_pretrained(d)", "transformers.AutoConfig.from_pretrained"),
    ("from transformers import AutoModel\nAutoModel.from_pretrained(d, trust_remote_code=True)",
     "transformers.AutoModel.from_pretrained"),
    ("def f(cls, d):\n    return cls.from_pretrained(d)", "cls.from_pretrained"),
    # issue 19 review: each of these runs code or unpickles, and the checker missed it.
    ("from torch.distributed.checkpoint import FileSystemReader\nFileSystemReader(p).read_metadata()",
     "FileSystemReader(p).read_metadata"),
    ("from torch.distributed.checkpoint.filesystem import FileSystemReader\nr = FileSystemReader(p)",
     f"{DCP}.filesystem.FileSystemReader"),
    ("from torch.distributed.checkpoint import state_dict_loader\nstate_dict_loader._load_state_dict_from_keys()",
     f"{DCP}.state_dict_loader._load_state_dict_from_keys"),
    ("from transformers import AutoModel\nAutoModel.from_config(c, trust_remote_code=True)",
     "transformers.AutoModel.from_config"),
    ("import transformers\ntransformers.pipeline('x', model=m, trust_remote_code=True)", "transformers.pipeline"),
    ("import transformers\ntransformers.pipeline('x', model=m, trust_remote_code=flag)", "transformers.pipeline"),
    ("import numpy as np\nnp.load(f, allow_pickle=True)", "numpy.load"),
    ("import numpy as np\nnp.load(f, allow_pickle=ok)", "numpy.load"),
    ("import pickle\ngetattr(pickle, 'loads')(b)", "pickle.loads"),
    ("import pickle\ngetattr(pickle, name)(b)", "pickle.<computed>"),
    ("import sys\nsys.modules['pickle'].loads(b)", "pickle (dynamic import)"),
    ("import importlib\nimportlib.import_module('pickle').loads(b)", "pickle (dynamic import)"),
    ("import pickle\nclass U(pickle.Unpickler):\n    def find_class(self, m, n):\n"
     "        return super().find_class(m, n)\nU(f).load()", "U"),
    ("import torch\ntorch.jit.mobile._load_for_lite_interpreter(p)", "torch.jit.mobile._load_for_lite_interpreter"),
    ("import torch\ntorch._C.import_ir_module(cu, p, dev, files)", "torch._C.import_ir_module"),
    ("import torch\ntorch.serialization._legacy_load(f, 'cpu', pickle)", "torch.serialization._legacy_load"),
    ("from torch.serialization import _load\n_load(z, 'cpu', pickle)", "torch.serialization._load"),
]


@pytest.mark.parametrize(("source", "name"), BANNED_SOURCES)
def test_checker_finds_each_banned_call(source: str, name: str) -> None:
    assert name in {f.name for f in check_source(source)}


ALLOWED_SOURCES = [
    'def f():\n    """Calls pickle.load(f) and torch.load(p) and dcp.load(x)."""\n    return 1',
    "# pickle.loads(b) in a comment\nx = 'torch.jit.load(p)'",
    "import torch\ntorch.load(p, weights_only=True, map_location='cpu')",
    "import transformers\ntransformers.AutoConfig.from_pretrained(d, trust_remote_code=False)",
    "import pickle\nclass R(pickle.Unpickler):\n    def find_class(self, m, n):\n        raise KeyError(m)\n"
    "R(f).load()",
    "import pickle\npickle.dumps(x)\npickle.Unpickler",  # a base-class reference is no call
    "import torch.distributed.checkpoint as dcp\ndcp.save(sd, checkpoint_id=p)",
    "import numpy as np\nnp.load(f, allow_pickle=False)",
    "import transformers\ntransformers.AutoModel.from_config(c, trust_remote_code=False)",
    "import json\ngetattr(json, 'loads')(b)",
    "import importlib\nimportlib.import_module('json')",
    "import torch\ngetattr(torch, dtype_name)",
]


@pytest.mark.parametrize("source", ALLOWED_SOURCES)
def test_checker_allows_safe_code(source: str) -> None:
    assert check_source(source) == []
