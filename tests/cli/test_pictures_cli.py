"""The pictures through the command line: diff by module, inspect --stats, show, size bars, HTML."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()
ENV = {"COLUMNS": "160", "NO_COLOR": "1"}


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str]:
    """A fine-tune that moved only the last two of four blocks."""
    g = torch.Generator().manual_seed(0)
    a = {f"blocks.{i}.{p}.weight": torch.randn(6, 6, generator=g) for i in range(4) for p in ("q_proj", "mlp")}
    b = {k: v + (0.1 * torch.randn(6, 6, generator=g) if k.startswith(("blocks.2", "blocks.3")) else 0)
         for k, v in a.items()}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    return str(tmp_path / "a.pt"), str(tmp_path / "b.pt")


def test_diff_by_module_in_every_format(pair: tuple[str, str]) -> None:
    a, b = pair
    human = runner.invoke(app, ["diff", a, b, "--by-module", "--depth", "2", "--sort", "change"], env=ENV)
    assert human.exit_code == 1
    lines = human.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("change by module"))
    ranked = [line.split()[0] for line in lines[head + 2:head + 6]]
    assert set(ranked[:2]) == {"blocks.2", "blocks.3"} and "█" in lines[head + 2]
    assert "changed values" not in human.stdout  # --by-module replaces the per-key table
    default = runner.invoke(app, ["diff", a, b], env=ENV)  # values differ: the module view leads
    assert "change by module (by block, model order" in default.stdout and "changed values" in default.stdout
    auto = default.stdout.splitlines()
    head = next(i for i, line in enumerate(auto) if line.startswith("change by module"))
    assert auto[head + 2].split()[0] == "blocks.0"  # by default a stack of blocks is one row per block
    data = json.loads(runner.invoke(app, ["diff", a, b, "-f", "json", "--depth", "3"]).stdout)
    assert data["module_depth"] == 3 and len(data["modules"]) == 8
    top = runner.invoke(app, ["diff", a, b, "-f", "csv", "--by-module", "--depth", "1"]).stdout
    rows = list(csv.DictReader(io.StringIO(top)))
    assert [r["module"] for r in rows] == ["blocks"] and float(rows[0]["rel_change"]) > 0
    assert runner.invoke(app, ["diff", a, b, "--sort", "bogus"]).exit_code == 2


def test_equal_files_show_no_module_view_unless_asked(pair: tuple[str, str]) -> None:
    a, _ = pair
    assert "change by module" not in runner.invoke(app, ["diff", a, a], env=ENV).stdout
    asked = runner.invoke(app, ["diff", a, a, "--by-module", "--depth", "2"], env=ENV)
    assert asked.exit_code == 0 and "blocks.0" in asked.stdout


def test_inspect_stats_draws_histograms_and_show_prints_one_tensor(pair: tuple[str, str]) -> None:
    a, _ = pair
    out = runner.invoke(app, ["inspect", a, "--stats"], env=ENV).stdout
    assert "|x| p99" in out and "histogram" in out and any(ch in out for ch in "▁▂▃▄▅▆▇█")
    shown = runner.invoke(app, ["show", a, "blocks.1.mlp.weight", "--bins", "5"], env=ENV)
    assert shown.exit_code == 0 and "histogram of the 36 finite values (5 bins" in shown.stdout
    assert "> weight" in shown.stdout and "largest:" in shown.stdout
    data = json.loads(runner.invoke(app, ["show", a, "blocks.1.mlp.weight", "-f", "json"]).stdout)
    assert sum(data["entry"]["stats"]["histogram"]["counts"]) == 36 and len(data["histogram_edges"]) == 41
    missing = runner.invoke(app, ["show", a, "blocks.1.mlp.wieght"])
    assert missing.exit_code == 2 and "did you mean" in missing.stderr


def test_size_draws_bars_by_module_kind_and_dtype(pair: tuple[str, str]) -> None:
    out = runner.invoke(app, ["size", pair[0], "--depth", "2"], env=ENV).stdout
    block = out.split("by kind")[1].split("by dtype")[0]
    assert "█" * 30 in block  # one kind holds every byte: a full bar
    modules = out.split("by kind")[0].splitlines()
    assert all(line.rstrip().endswith("███████▌") for line in modules if line.startswith("blocks."))  # 25% each


def test_html_for_inspect_size_diff_show_and_refused_elsewhere(pair: tuple[str, str]) -> None:
    a, b = pair
    for args in (["inspect", a, "--stats"], ["size", a], ["diff", a, b], ["show", a, "blocks.0.mlp.weight"]):
        r = runner.invoke(app, [*args, "-f", "html"])
        assert r.exit_code in (0, 1) and r.stdout.startswith("<!doctype html>") and "<svg" in r.stdout, args
    refused = runner.invoke(app, ["scan", a, "-f", "html"])
    assert refused.exit_code == 2 and "'html' is not one of" in refused.stderr
