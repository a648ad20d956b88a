"""At 80 columns every table keeps its name column and every number whole (text wraps instead)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app
from statecli.units import fmt_bytes

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    sd = {
        "encoder.layer.0.attention.self.query.weight": torch.randn(64, 64),
        "encoder.layer.0.attention.output.LayerNorm.bias": torch.randn(64),
        "encoder.layer.0.intermediate.dense.weight": torch.randn(128, 64),
        "embeddings.position_ids": torch.arange(512).unsqueeze(0),
        "bn.running_mean": torch.randn(64),
    }
    path = tmp_path_factory.mktemp("narrow") / "model.pt"
    torch.save(sd, path)
    return path


def _run(*args: str, width: int = 80) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert result.exit_code in (0, 1), result.stdout + result.stderr
    return result.stdout


def _column(lines: list[str], head: str, next_head: str) -> list[str]:
    """The text of one column, line by line, cut at the header's positions."""
    header = next(i for i, line in enumerate(lines) if re.match(rf"{head}\s+{next_head}\b", line))
    start, end = lines[header].index(head), lines[header].index(next_head)
    out = []
    for line in lines[header + 1:]:
        if not line.strip():
            break
        out.append(line[start:end].strip())
    return out


@pytest.mark.parametrize("extra", [[], ["--stats"]])
def test_inspect_at_80_columns_keeps_names_and_numbers(ckpt: Path, extra: list[str]) -> None:
    out = _run("inspect", str(ckpt), *extra)
    lines = out.splitlines()
    sd = torch.load(ckpt, weights_only=True)
    for name, t in sd.items():  # a name is never folded: whole at the start of a line (issue 21)
        assert any(line.split()[:1] == [name] for line in lines), f"{name} lost at 80 columns:\n{out}"
        assert re.search(rf"(^|\s){re.escape(fmt_bytes(t.numel() * t.element_size()))}(\s|$)", out, re.M)
    assert "numel not shown" in out  # numel made room for the names (the summary still totals it)
    assert all(len(line) <= 80 for line in lines) or extra, "the plain listing must fit 80 columns"
    assert all(line == line.rstrip() for line in lines)


def test_size_and_diff_at_80_columns(ckpt: Path, tmp_path: Path) -> None:
    out = _run("size", str(ckpt), "--depth", "4")
    assert "encoder.layer.0.attention" in out.replace("\n", "")
    assert "128.0 KiB" in out or "32.0 KiB" in out
    other = tmp_path / "other.pt"
    sd = torch.load(ckpt, weights_only=True)
    sd["encoder.layer.0.intermediate.dense.weight"] = sd["encoder.layer.0.intermediate.dense.weight"] + 1
    torch.save(sd, other)
    diff = _run("diff", str(ckpt), str(other))
    lines = diff.splitlines()
    assert any(line.split()[:1] == ["encoder.layer.0.intermediate.dense.weight"] for line in lines), diff
    assert "8,192" in diff  # over-tolerance count, whole


def test_pipes_are_not_padded(ckpt: Path) -> None:
    result = runner.invoke(app, ["inspect", str(ckpt)], env={"NO_COLOR": "1", "COLUMNS": None, "LINES": None})
    assert all(line == line.rstrip() for line in result.stdout.splitlines())
    assert max(len(line) for line in result.stdout.splitlines()) < 160


def test_piped_text_lines_are_not_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "train.pt"
    groups = {f"container_number_{i}": {"w": torch.ones(1)} for i in range(12)}
    torch.save({"model": {"w": torch.ones(2)}, **groups}, path)
    result = runner.invoke(app, ["inspect", str(path)], env={"NO_COLOR": "1", "COLUMNS": None})
    line = next(x for x in result.stdout.splitlines() if x.startswith("other containers:"))
    assert all(f"container_number_{i} " in line for i in range(12)) and len(line) > 160
