"""The one verdict function: capability rules under every spelling, no torch import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from statecli.pickle.verdict import verdict
from statecli.state import Verdict

S, T, D = Verdict.SAFE, Verdict.NEEDS_TRUST, Verdict.DANGEROUS


@pytest.mark.parametrize(("module", "name", "want"), [
    ("torch._utils", "_rebuild_tensor_v2", S), ("torch", "float16", S), ("collections", "OrderedDict", S),
    ("torch._C._nn", "gelu", S), ("torch.nn.functional", "silu", S), ("torch._C._VariableFunctionsClass", "tanh", S),
    ("functools", "partial", S), ("_functools", "partial", S), ("builtins", "len", S),
    ("torch.nn.functional", "torch", T), ("torch._C._nn", "_private", D), ("torch._C._VariableFunctionsClass",
                                                                            "from_file", D),
    ("__main__", "Net", T), ("torch.nn.modules.linear", "Linear", T), ("argparse", "Namespace", T),
    ("os", "system", D), ("posix", "system", D), ("__builtin__", "eval", D), ("commands", "getoutput", D),
    ("builtins", "getattr", D), ("functools", "reduce", D), ("logging", "FileHandler", D),
    ("logging.handlers", "SocketHandler", D), ("numpy.lib._npyio_impl", "load", D), ("numpy", "load", D),
    ("pandas", "read_pickle", D), ("logging", "os.system", D), ("torch", "serialization.load", D),
    ("collections", "OrderedDict.__init__", D),
])
def test_verdict_table(module: str, name: str, want: Verdict) -> None:
    assert verdict(module, name) is want


def test_trusted_names_and_torchscript() -> None:
    trusted = frozenset({"torch.distributed.checkpoint.metadata.Metadata"})
    assert verdict("torch.distributed.checkpoint.metadata", "Metadata", trusted) is S
    # Beyond the exact trusted names the namespace reads, writes and unpickles files (issue 19 review).
    assert verdict("torch.distributed.checkpoint.metadata", "Metadataa", trusted) is Verdict.DANGEROUS
    assert verdict("torch.distributed.checkpoint.fs", "os.system", trusted) is D
    assert verdict("torch.jit._pickle", "build_intlist") is D
    assert verdict("torch.jit._pickle", "build_intlist", torchscript=True) is S


def test_verdict_imports_no_torch() -> None:
    code = "import statecli.pickle.verdict, statecli.pickle.pickles, sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
