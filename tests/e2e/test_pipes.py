"""`statecli ... | head -1`: a reader that stops early is not an error. Real processes, real pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent / "statecli"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Enough entries that every listing overflows a pipe's 64 KiB buffer."""
    folder = tmp_path_factory.mktemp("pipes")
    sd = {f"layers.{i}.block.weight": torch.full((2,), float(i)) for i in range(3000)}
    a, b = folder / "a.pt", folder / "b.pt"
    torch.save(sd, a)
    torch.save({k: v + 1 for k, v in sd.items()}, b)
    return a, b


def _full(args: list[str]) -> int:
    return subprocess.run([str(BIN), *args], capture_output=True, timeout=120).returncode


def _head1(args: list[str]) -> tuple[int, bytes, bytes]:
    proc = subprocess.Popen([str(BIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "100"})
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read()
    return proc.wait(timeout=120), first, err


COMMANDS = [
    ["inspect", "{a}"], ["inspect", "{a}", "-f", "json"], ["inspect", "{a}", "-f", "csv"], ["inspect", "{a}", "-f", "md"],
    ["inspect", "{a}", "--tree"], ["inspect", "{a}", "--stats"], ["size", "{a}", "--depth", "2"],
    ["diff", "{a}", "{b}"], ["diff", "{a}", "{b}", "-f", "json"], ["diff", "{a}", "{b}", "-f", "csv"],
    ["scan", "{a}", "{b}", "-f", "json"], ["check", "{a}", "{b}", "--forbidden-key", "weight"],
]


@pytest.mark.parametrize("template", COMMANDS, ids=lambda t: " ".join(t).replace("{", "").replace("}", ""))
def test_stdout_closed_early_is_not_an_error(big: tuple[Path, Path], template: list[str]) -> None:
    a, b = big
    args = [x.replace("{a}", str(a)).replace("{b}", str(b)) for x in template]
    code, first, err = _head1(args)
    assert first, "the command printed nothing"
    assert b"error" not in err.lower() and b"Traceback" not in err and b"Exception ignored" not in err, err
    assert code == _full(args)  # the command's own result code, as if the whole output had been read
