"""TorchScript archives are read (parameters and buffers from data.pkl, their kinds from the class
declarations in code/, read as text), legacy full-model files keep their class source as data, and
pre-0.4 tar files get the loader's exit 3 wherever `scan` finds a payload."""

from __future__ import annotations

import io
import shlex
import tarfile
from pathlib import Path
from typing import Any

import torch
from typer.testing import CliRunner

from benchmarks.pickle_bytes import TinyNet, binunicode, call, glob, wrap
from statecli.analyses.scan import scan
from statecli.cli import app
from statecli.load import load_checkpoint
from statecli.state import Kind, Verdict

runner = CliRunner()


class Scripted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 3)
        self.bn = torch.nn.BatchNorm1d(3)
        self.seq = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.GELU())
        self.scale = torch.nn.Parameter(torch.ones(3))
        self.register_buffer("offset", torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(self.bn(self.fc(x))) * self.scale + self.offset


def _jit_file(tmp_path: Path) -> Path:
    p = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(Scripted()), str(p))
    return p


def test_torchscript_is_read_like_torch_jit_load(tmp_path: Path) -> None:
    p = _jit_file(tmp_path)
    ref = torch.jit.load(str(p))
    ck = load_checkpoint(str(p))
    assert ck.format == "torchscript zip" and ck.container == "(pickled module)"
    kinds = {e.name: e.kind for e in ck.entries if e.tensor is not None}
    assert {n for n, k in kinds.items() if k is Kind.PARAMETER} == {n for n, _ in ref.named_parameters()}
    assert {n for n, k in kinds.items() if k is Kind.BUFFER} == {n for n, _ in ref.named_buffers()}
    shapes = {e.name: (e.tensor.dtype, tuple(e.tensor.shape)) for e in ck.entries if e.tensor is not None}
    assert shapes == {n: (str(t.dtype).removeprefix("torch."), tuple(t.shape)) for n, t in ref.state_dict().items()}
    assert any("TorchScript" in w for w in ck.warnings)


def test_torchscript_every_command_agrees_with_scan(tmp_path: Path) -> None:
    p = _jit_file(tmp_path)
    r = scan(str(p))
    assert r.verdict is Verdict.NEEDS_TRUST and r.exit_code == 1, r.to_dict()
    assert not any(".py" in g.where and ".debug_pkl" not in g.where for g in r.globals)
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 0
    assert runner.invoke(app, ["size", str(p)]).exit_code == 0
    assert runner.invoke(app, ["check", str(p)]).exit_code == 1  # safe-pickle: needs trust
    out = tmp_path / "half.pt"
    res = runner.invoke(app, ["cast", str(p), "--dtype", "half", "-o", str(out)])
    assert res.exit_code == 0, res.output
    sd = torch.load(out, weights_only=True)  # its state_dict(): what every loader wants
    assert sd["fc.weight"].dtype is torch.float16 and "bn.num_batches_tracked" in sd


def test_torchscript_without_declarations_is_refused_with_a_hint(tmp_path: Path) -> None:
    import zipfile

    p = _jit_file(tmp_path)
    q = tmp_path / "stripped.pt"
    with zipfile.ZipFile(p) as src, zipfile.ZipFile(q, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".py"):
                data = data.replace(b"__parameters__", b"__nothing__")
            dst.writestr(info, data)
    res = runner.invoke(app, ["inspect", str(q)])
    assert res.exit_code == 2 and "TorchScript" in res.stderr and "torch.jit.load" in res.stderr, res.output


def test_legacy_full_model_source_is_data(tmp_path: Path) -> None:
    p = tmp_path / "legacy-model.pt"
    torch.save(TinyNet(), p, _use_new_zipfile_serialization=False)
    r = scan(str(p))
    assert r.verdict is Verdict.NEEDS_TRUST and not r.errors and not r.problems and r.pickles == 5, r.to_dict()
    assert not any("string at" in g.where for g in r.globals)
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 0


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _codes(p: Path, tmp_path: Path) -> dict[str, Any]:
    out = {c: runner.invoke(app, [c, str(p)]).exit_code for c in ("scan", "inspect", "size")}
    out["cast"] = runner.invoke(app, ["cast", str(p), "--dtype", "half", "-o", str(tmp_path / "o.pt")]).exit_code
    return out


def test_tar_with_payload_is_exit_3_everywhere(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = wrap(call(glob("os", "system"), binunicode("touch " + shlex.quote(str(marker)))))
    p = tmp_path / "old.tar"
    p.write_bytes(_tar([("sys_info", wrap(b"")), ("pickle", payload), ("storages", b""), ("tensors", b"")]))
    assert _codes(p, tmp_path) == {"scan": 3, "inspect": 3, "size": 3, "cast": 3}
    assert not marker.exists()


def test_benign_tar_is_unsupported_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "old.tar"
    p.write_bytes(_tar([("sys_info", b"\x80\x02}q\x00."), ("pickle", b"\x80\x02}q\x00."), ("storages", b""),
                        ("tensors", b"")]))
    assert _codes(p, tmp_path) == {"scan": 2, "inspect": 2, "size": 2, "cast": 2}
    assert "pre-0.4" in runner.invoke(app, ["inspect", str(p)]).stderr
