"""`-q` means one thing for every command (issue 21): stdout holds only the one line that states the
outcome, stderr only errors; the exit code says the rest. A machine format asked for with -f is the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two files that differ in one key's values and one key's presence; a (pickled) extra draws notes."""
    import torch

    torch.manual_seed(0)
    a = {f"blocks.{i}.weight": torch.randn(8, 8) for i in range(6)} | {"bn.running_mean": torch.zeros(8)}
    b = dict(a) | {"blocks.0.weight": a["blocks.0.weight"] + 1, "extra.bias": torch.ones(3)}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    return tmp_path / "a.pt", tmp_path / "b.pt"


COMMANDS = [
    (["diff", "{a}", "{b}"], 1, "different:"),
    (["diff", "{a}", "{a}"], 0, "equal:"),
    (["check", "{a}", "{b}", "--required-key", "extra"], 1, "passed, 1 failed"),
    (["scan", "{a}", "{b}", "{full}"], 1, "scanned 3 files:"),
    (["inspect", "{full}"], 0, "tensors"),
    (["size", "{a}"], 0, "params"),
    (["show", "{a}", "blocks.1.weight"], 0, "blocks.1.weight float32"),
    (["cast", "{a}", "--dtype", "half", "-o", "{tmp}/h.pt"], 0, "wrote"),
    (["strip", "{full}", "--buffers", "-o", "{tmp}/s.safetensors"], 0, "wrote"),
    (["convert", "{full}", "--dry-run"], 0, "dry run:"),
    (["move", "{a}", "--device", "cpu", "-o", "{tmp}/m.pt"], 0, "wrote"),
    (["rename", "{a}", "--add-prefix", "net.", "-o", "{tmp}/r.pt"], 0, "wrote"),
]


@pytest.mark.parametrize(("args", "code", "says"), COMMANDS, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_quiet_prints_one_outcome_line(pair: tuple[Path, Path], samples: Path, tmp_path: Path, args: list[str],
                                       code: int, says: str) -> None:
    a, b = pair
    argv = [x.format(a=a, b=b, full=samples / "full_model.pt", tmp=tmp_path) for x in args]
    loud = runner.invoke(app, argv)
    quiet = runner.invoke(app, [*argv, "-q"])
    assert quiet.exit_code == loud.exit_code == code, (quiet.stdout, quiet.stderr)
    lines = quiet.stdout.splitlines()
    assert len(lines) == 1 and says in lines[0], quiet.stdout
    assert lines[0] in loud.stdout.replace("\n", " ") or len(loud.stdout.splitlines()) > 1
    assert quiet.stderr == ""


def test_quiet_keeps_a_machine_format_whole(pair: tuple[Path, Path]) -> None:
    a, b = pair
    result = runner.invoke(app, ["diff", str(a), str(b), "-q", "-f", "json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["keys"] and result.stderr == ""


def test_quiet_still_prints_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["inspect", str(tmp_path / "bad.pt"), "-q"])
    assert result.exit_code == 2 and result.stdout == "" and "bad.pt" in result.stderr
