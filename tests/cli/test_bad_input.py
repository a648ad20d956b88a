"""Bad input is one line naming the file and the problem: a cut-short .pt says it looks truncated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


@pytest.mark.parametrize("keep", [100, 0.5, -1])
def test_truncated_pt_says_truncated(tmp_path: Path, keep: float) -> None:
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.ones(20000), "b": torch.zeros(3)}, whole)
    data = whole.read_bytes()
    n = int(keep * len(data)) if isinstance(keep, float) else keep if keep > 0 else len(data) - 1
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[:n])
    for command in (["inspect", str(cut)], ["cast", str(cut), "--dtype", "half", "-o", str(tmp_path / "o.pt")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and "truncated" in result.stderr and str(cut) in result.stderr
    assert not (tmp_path / "o.pt").exists()
