"""The installed `statecli` script and `python -m statecli`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import small_cnn

runner = CliRunner()




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
    assert len(json.loads(proc.stdout)["entries"]) == len(small_cnn().state_dict())
    proc = subprocess.run([sys.executable, "-m", "statecli", "inspect", str(cnn) + ".nope"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
