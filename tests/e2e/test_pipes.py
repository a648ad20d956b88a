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
    sd = {f"layers.{i}.block.weight": torch.full((2,), float(i)) for i in range(900)}
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


# (command, its own result code when the whole output is read: 1 = "different" / "rule failed")
COMMANDS = [
    (["inspect", "{a}"], 0), (["inspect", "{a}", "-f", "json"], 0), (["inspect", "{a}", "-f", "csv"], 0),
    (["inspect", "{a}", "-f", "md"], 0), (["inspect", "{a}", "--tree"], 0), (["inspect", "{a}", "--stats"], 0),
    (["size", "{a}", "--depth", "2"], 0), (["diff", "{a}", "{b}"], 1), (["diff", "{a}", "{b}", "-f", "json"], 1),
    (["diff", "{a}", "{b}", "-f", "csv"], 1), (["scan", "{a}", "{b}", "-f", "json"], 0),
    (["check", "{a}", "{b}", "--forbidden-key", "weight"], 1),
]


@pytest.mark.parametrize("template,own_code", COMMANDS, ids=lambda t: " ".join(t).replace("{", "").replace("}", "")
                         if isinstance(t, list) else str(t))
def test_stdout_closed_early_is_not_an_error(big: tuple[Path, Path], template: list[str], own_code: int) -> None:
    a, b = big
    args = [x.replace("{a}", str(a)).replace("{b}", str(b)) for x in template]
    code, first, err = _head1(args)
    assert first, "the command printed nothing"
    assert b"error" not in err.lower() and b"Traceback" not in err and b"Exception ignored" not in err, err
    assert code == own_code


def test_own_codes_are_the_full_runs(big: tuple[Path, Path]) -> None:
    """The expected codes above are what the commands return when nothing closes the pipe."""
    a, b = big
    for template, own_code in COMMANDS[::3]:
        args = [x.replace("{a}", str(a)).replace("{b}", str(b)) for x in template]
        assert _full(args) == own_code, args
