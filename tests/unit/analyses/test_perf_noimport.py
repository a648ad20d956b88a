"""Value commands on ordinary checkpoints do not import torch (numpy + ml_dtypes read and reduce the values)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

CODE = """
import sys
from statecli.cli import main
sys.argv = ["statecli", *sys.argv[1:], "-f", "json"]
try:
    main()
except SystemExit:
    pass
print("TORCH" if "torch" in sys.modules else "NO-TORCH", file=sys.stderr)
"""


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = {"w": torch.randn(8, 4), "h": torch.randn(16).to(torch.bfloat16), "f8": torch.randn(5).to(torch.float8_e4m3fn),
         "n": torch.arange(6), "m": torch.tensor([True, False])}
    b = {**a, "w": a["w"] + 1e-3}
    b["h"] = b["h"].clone()
    b["h"][0] = float("nan")
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


@pytest.mark.parametrize("args", [["diff", "{a}", "{b}"], ["inspect", "{b}", "--stats"],
                                  ["check", "{b}", "--no-nan", "--no-inf"], ["show", "{b}", "h"]])
def test_value_commands_leave_torch_out(pair: tuple[Path, Path], args: list[str]) -> None:
    a, b = pair
    argv = [x.format(a=a, b=b) for x in args]
    proc = subprocess.run([sys.executable, "-c", CODE, *argv], capture_output=True, text=True, timeout=120)
    assert "NO-TORCH" in proc.stderr, proc.stderr[-2000:]
