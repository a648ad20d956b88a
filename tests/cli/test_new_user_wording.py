"""What read badly to a new user (issue 21): check says NaN/Inf as torch and numpy spell them, and a folder
rewrite's copy note leaves out a count of none."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


def test_check_spells_nan_and_inf(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(3), "bad": torch.tensor([float("nan"), float("inf")])}, tmp_path / "a.pt")
    got = runner.invoke(app, ["check", str(tmp_path / "a.pt"), "--no-nan", "--no-inf", "-f", "json"])
    reasons = {f["rule"]: f["reason"] for f in json.loads(got.stdout)["findings"]}
    assert reasons["no-nan"] == "bad: 1 NaN" and reasons["no-inf"] == "bad: 1 Inf", reasons
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pt")
    ok = runner.invoke(app, ["check", str(tmp_path / "ok.pt"), "--no-nan", "-f", "json"])
    assert json.loads(ok.stdout)["findings"][-1]["reason"] == "no NaN in 1 floating tensor(s)"


def test_folder_copy_note_leaves_out_what_there_is_none_of(tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    save_file({"w": torch.ones(4)}, str(src / "model.safetensors"))
    (src / "config.json").write_text("{}")
    (src / "README.md").write_text("hello\n")
    got = runner.invoke(app, ["cast", str(src), "--dtype", "half", "--no-hf-config", "-o", str(tmp_path / "out")])
    assert got.exit_code == 0, got.output
    note = next(line for line in got.stderr.splitlines() if "copied the rest of the input folder" in line)
    assert note.endswith(": 2 file(s)") and "folder(s)" not in note, note  # config.json and README.md
