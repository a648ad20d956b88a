"""The installed `statecli` script and `python -m statecli`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 2)


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "cnn.pt"
    torch.save(Net().state_dict(), path)
    return path


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_subprocess_run_does_not_import_torch(cnn: Path) -> None:
    """The installed entry point, as a user runs it: inspect reads metadata without importing torch."""
    code = ("import sys\nfrom statecli.cli import main\nsys.argv=['statecli','inspect',sys.argv[1],'--format','json']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code, str(cnn)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["entries"]


def test_import_cli_does_not_import_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", "import sys, statecli.cli; sys.exit('torch' in sys.modules)"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0


def test_console_script_and_module(cnn: Path) -> None:
    exe = Path(sys.executable).with_name("statecli")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "statecli"]
    proc = subprocess.run(cmd + ["inspect", str(cnn), "--format", "json"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["entries"]) == len(Net().state_dict())
    proc = subprocess.run([sys.executable, "-m", "statecli", "inspect", str(cnn) + ".nope"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
