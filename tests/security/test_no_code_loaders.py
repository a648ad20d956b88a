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
}
STDLIB_UNPICKLERS = {"pickle.Unpickler", "_pickle.Unpickler", "pickle._Unpickler", "cPickle.Unpickler"}
DCP = "torch.distributed.checkpoint"
DCP_LOADERS = ("load", "load_state_dict", "_load_state_dict", "dcp_to_torch_save", "torch_save_to_dcp")
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
                own_find_class = any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body)
                if bases & out and not own_find_class:
                    out.add(node.name)
                    changed = True
    return out


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
        if name in ALWAYS_BANNED:
            out.append(Finding(path, node.lineno, name, "runs the code its input names"))
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
]


@pytest.mark.parametrize("source", ALLOWED_SOURCES)
def test_checker_allows_safe_code(source: str) -> None:
    assert check_source(source) == []
