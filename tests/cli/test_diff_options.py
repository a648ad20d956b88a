"""diff across dtypes within a tolerance, and it says what it compared and what it left out."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


def _files(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    sd = {"w": torch.randn(8, 8), "b": torch.randn(8)}
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "epoch": 3}, a)
    torch.save({k: v.half() for k, v in sd.items()}, b)
    return a, b


def test_fp32_vs_fp16_differs_by_default_and_is_equal_with_ignore_dtype(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    strict = runner.invoke(app, ["diff", str(a), str(b), "-f", "json"])
    assert strict.exit_code == 1
    loose = runner.invoke(app, ["diff", str(a), str(b), "-f", "json", "--ignore-dtype", "--rtol", "1e-3", "--atol", "1e-3"])
    assert loose.exit_code == 0, loose.stdout
    data = json.loads(loose.stdout)
    assert data["equal"] is True and all(k.get("compared_as") == "float32" for k in data["keys"])
    tight = runner.invoke(app, ["diff", str(a), str(b), "-f", "json", "--ignore-dtype", "--rtol", "0", "--atol", "0"])
    assert tight.exit_code == 1  # half rounding is a value difference at zero tolerance


def test_diff_names_the_container_and_what_was_left_out(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    data = json.loads(runner.invoke(app, ["diff", str(a), str(b), "-f", "json"]).stdout)
    assert data["a"]["container"] == "model"
    assert data["a"]["left_out"] == ["epoch", "optimizer"]
    human = runner.invoke(app, ["diff", str(a), str(b)], env={"COLUMNS": "200"})
    assert "model state: model" in human.stdout and "not compared: epoch, optimizer" in human.stdout


def test_cross_dtype_mismatch_hints_at_the_narrower_dtypes_tolerance(tmp_path: Path) -> None:
    a, b = _files(tmp_path)
    data = json.loads(runner.invoke(app, ["diff", str(a), str(b), "-f", "json", "--ignore-dtype"]).stdout)
    hint = next(h for h in data["hints"] if "--rtol" in h)
    rtol, atol = hint.split("--rtol ")[1].split(" --atol ")
    follow = runner.invoke(app, ["diff", str(a), str(b), "--ignore-dtype", "--rtol", rtol, "--atol", atol.split()[0]])
    assert follow.exit_code == 0, follow.stdout  # the hint's tolerance is the one that compares them
