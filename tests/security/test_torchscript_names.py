"""A TorchScript archive's class names are TorchScript's: torch.load(weights_only=False) hands the
archive to torch.jit.load, which resolves every name its unpickler does not special-case by compiling
that class from the archive's own code/ and running its __setstate__. A scripted module renamed
`builtins.len` or `torch.nn.functional.relu` is that code, not the Python global (issue 19, item 4)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from torch import Tensor
from typer.testing import CliRunner

from statecli.analyses.scan import scan
from statecli.cli import app
from statecli.pickle.verdict import TORCHSCRIPT_BUILTINS, Verdict, torchscript_verdict

runner = CliRunner()
CANARY = bytes([67, 65, 78, 65, 82, 89])


class Evil(torch.nn.Module):
    """Its compiled __setstate__ creates and writes the file named by `path` (the canary)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))
        self.path = path
        self.n = 0

    def forward(self, x: Tensor) -> Tensor:
        return x * self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[Tensor, str, bool]:
        return (self.w, self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[Tensor, str, bool]) -> None:
        self.w = state[0]
        self.path = state[1]
        self.training = state[2]
        t = torch.from_file(self.path, shared=True, size=6, dtype=torch.uint8)
        self.n = int(t.copy_(torch.tensor([67, 65, 78, 65, 82, 89], dtype=torch.uint8)).sum())


def _renamed(tmp_path: Path, new: str, canary: Path) -> Path:
    """A scripted Evil whose class is renamed `new` everywhere torch.jit.load looks: the GLOBAL in
    data.pkl, the class statement and its self-references, and the code/ file it is compiled from."""
    m = torch.jit.script(Evil(str(canary)))
    old = m._c._type().qualified_name()  # __torch__.<module>.Evil
    base = tmp_path / "base.pt"
    torch.jit.save(m, str(base))
    old_mod, _, old_cls = old.rpartition(".")
    mod, _, cls = new.rpartition(".")
    out = tmp_path / f"renamed_{new}.pt"
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            name, data = info.filename, src.read(info)
            if name.endswith(".debug_pkl"):
                continue  # source ranges of the old names; torch.jit.load does without them
            if name.endswith("/code/" + old_mod.replace(".", "/") + ".py"):
                data = data.replace(old.encode(), new.encode()).replace(f"class {old_cls}(".encode(),
                                                                        f"class {cls}(".encode())
                name = name.split("/code/")[0] + "/code/" + mod.replace(".", "/") + ".py"
            if name.endswith("/data.pkl"):
                data = data.replace(f"c{old_mod}\n{old_cls}\n".encode(), f"c{mod}\n{cls}\n".encode())
            dst.writestr(name, data)
    return out


RENAMES = ["torch.nn.functional.relu", "torch._C._nn.M", "torch._C._VariableFunctions.M", "builtins.len",
           "functools.partial", "collections.defaultdict", "__builtin__.complex", "copy_reg._reconstructor",
           # Names statecli has its own builders for that torch.jit.load does not resolve itself: in a
           # TorchScript archive they are code/ classes too, never our builders (issue 19 review).
           "_codecs.encode", "builtins.set", "torch.nn.parameter.Parameter", "builtins.bytearray",
           "collections.Counter"]


@pytest.mark.parametrize("new", RENAMES)
def test_renamed_scripted_class_is_code_for_scan_and_every_command(tmp_path: Path, new: str) -> None:
    canary = tmp_path / "canary"
    p = _renamed(tmp_path, new, canary)
    with pytest.raises(Exception):  # noqa: B017 - the weights-only loader refuses it, whatever the error
        torch.load(p, weights_only=True)
    r = scan(str(p))
    assert r.exit_code >= 1 and r.verdict is not Verdict.SAFE, r.to_dict()
    g = next(g for g in r.globals if g.name.endswith("." + new.rpartition(".")[2]) and g.where.endswith("data.pkl"))
    assert g.verdict is Verdict.NEEDS_TRUST and "code/" in g.detail
    assert any(c.endswith("/code/" + new.rpartition(".")[0].replace(".", "/") + ".py") for c in r.code)
    assert runner.invoke(app, ["check", str(p)]).exit_code in (1, 2)  # needs trust; a tuple state is not read
    assert not canary.exists()  # statecli ran nothing
    out = runner.invoke(app, ["scan", str(p)]).output
    assert "TorchScript code" in out
    torch.load(p, weights_only=False)  # the ordinary loader: the compiled __setstate__ writes the canary
    assert canary.read_bytes() == CANARY


def test_torchscript_builtins_are_the_only_safe_names() -> None:
    for full in TORCHSCRIPT_BUILTINS:
        module, _, name = full.rpartition(".")
        assert torchscript_verdict(module, name) is Verdict.SAFE
    for module, name in [("builtins", "len"), ("functools", "partial"), ("torch.nn.functional", "relu"),
                         ("torch._C._nn", "gelu"), ("__builtin__", "complex"), ("torch._utils", "_rebuild_tensor"),
                         ("collections", "Counter"), ("torch.nn.parameter", "Parameter")]:
        assert torchscript_verdict(module, name) is Verdict.NEEDS_TRUST, (module, name)
    assert torchscript_verdict("torch", "FloatStorage") is Verdict.SAFE  # an enum to torch.jit.load
    assert torchscript_verdict("os", "system") is Verdict.DANGEROUS


def test_code_folder_found_case_insensitively_is_still_torchscript(tmp_path: Path) -> None:
    """torch.load dispatches on an exact constants.pkl record; torch.jit.load then finds code/ under any
    case (its zip reader compares names case-insensitively): the names stay TorchScript's."""
    canary = tmp_path / "canary"
    src = _renamed(tmp_path, "builtins.len", canary)
    p = tmp_path / "upper_code.pt"
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(p, "w") as zo:
        for info in zi.infolist():
            zo.writestr(info.filename.replace("/code/", "/CODE/"), zi.read(info))
    r = scan(str(p))
    assert r.verdict is Verdict.NEEDS_TRUST and any(c.endswith("/CODE/builtins.py") for c in r.code), r.to_dict()
    assert not canary.exists()
    torch.load(p, weights_only=False)
    assert canary.read_bytes() == CANARY


BUILDER_RENAMES = ["_codecs.encode", "builtins.set", "torch.nn.parameter.Parameter", "builtins.bytearray",
                   "collections.Counter"]


@pytest.mark.parametrize("new", BUILDER_RENAMES)
def test_builder_names_in_torchscript_read_as_code_classes(tmp_path: Path, new: str) -> None:
    """statecli's own builders for these names (InertSet, bytes, Parameter) would refuse the scripted
    class's state as malformed (exit 2, the code/ class unreported as the verdict): read as stubs, the
    archive is read cleanly and needs trust, and readers refuse it."""
    canary = tmp_path / "canary"
    p = _renamed(tmp_path, new, canary)
    r = scan(str(p))
    assert not r.errors and r.verdict is Verdict.NEEDS_TRUST and r.exit_code == 1, r.to_dict()
    assert runner.invoke(app, ["inspect", str(p)]).exit_code != 0
    assert not canary.exists()
