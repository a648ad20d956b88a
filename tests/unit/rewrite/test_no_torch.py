"""Rewrites of ordinary .pt and .safetensors files do not import torch (numpy + ml_dtypes read and cast,
the .pt writer pickles torch's globals by name), and their outputs load in torch as before."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

CODE = """
import json, sys
from statecli.cli import app
worst = 0
for argv in json.loads(sys.argv[1]):  # every rewrite in one interpreter: torch must never come in
    try:
        app(argv, prog_name="statecli")
    except SystemExit as e:
        worst = max(worst, int(e.code or 0))
print("TORCH" if "torch" in sys.modules else "NO-TORCH", file=sys.stderr)
sys.exit(worst)
"""


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    return {"w": torch.randn(8, 4, generator=g) * 1e5, "h": torch.randn(16, generator=g).to(torch.bfloat16),
            "f8": torch.randn(5, generator=g).to(torch.float8_e4m3fn), "n": torch.arange(6),
            "m": torch.tensor([True, False]), "d": torch.randn(3, generator=g, dtype=torch.float64),
            "t": base.t(), "v": base[2:4], "s": torch.tensor(2.5), "e": torch.empty(0, 3)}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return _run_all([list(argv)])


def _run_all(argvs: list[list[str]]) -> subprocess.CompletedProcess[str]:
    import json

    proc = subprocess.run([sys.executable, "-c", CODE, json.dumps(argvs)], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return proc


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    sd = _state()
    obj = OrderedDict(sd)
    obj._metadata = OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]
    torch.save({"model": obj, "epoch": 3, "dtype": torch.float16, "lr": [0.1, 0.01]}, tmp_path / "a.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "a.safetensors")
    return tmp_path / "a.pt", tmp_path / "a.safetensors"


REWRITES = [["cast", "--dtype", "half"], ["cast", "--dtype", "bfloat16"], ["cast", "--dtype", "float8_e4m3fn"],
            ["convert"], ["move", "--device", "cuda:0"], ["strip", "--pattern", "^n$"], ["rename", "--add-prefix", "module."]]


@pytest.mark.parametrize("src", ["pt", "safetensors"])
def test_rewrites_leave_torch_out(files: tuple[Path, Path], tmp_path: Path, src: str) -> None:
    pt, st = files
    inp = pt if src == "pt" else st
    runs, outs = [], []
    for args in REWRITES:
        for ext in (".pt", ".safetensors"):
            if args[0] == "move" and ext == ".safetensors":
                continue  # safetensors holds no device
            out = tmp_path / f"out-{'-'.join(args)}-{src}{ext}"
            runs.append([args[0], str(inp), *args[1:], "-o", str(out), "-q"])
            outs.append(out)
    proc = _run_all(runs)
    assert "NO-TORCH" in proc.stderr, proc.stderr[-2000:]
    assert all(out.exists() for out in outs), [o.name for o in outs if not o.exists()]


def test_outputs_load_in_torch(files: tuple[Path, Path], tmp_path: Path) -> None:
    pt, st = files
    _run("cast", str(pt), "--dtype", "half", "-o", str(tmp_path / "h.pt"))
    got = torch.load(tmp_path / "h.pt", weights_only=True)
    ref = torch.load(pt, weights_only=True)
    assert got["epoch"] == 3 and got["dtype"] is torch.float16 and got["lr"] == [0.1, 0.01]
    assert got["model"]._metadata == ref["model"]._metadata
    for k, v in ref["model"].items():
        want = v.to(torch.float16) if v.is_floating_point() else v
        assert got["model"][k].dtype == want.dtype and torch.equal(got["model"][k], want), k
    # views of one storage stay views of one storage
    assert got["model"]["t"].untyped_storage().data_ptr() == got["model"]["v"].untyped_storage().data_ptr()
    _run("convert", str(st), "-o", str(tmp_path / "c.pt"))
    back = torch.load(tmp_path / "c.pt", weights_only=True)
    ref2 = load_file(st)
    assert set(back) == set(ref2)
    for k, v in ref2.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k
