"""`check -f md`: a table for a pull-request comment (✅/❌ per file with the failed rules' reasons, a
totals line), while JSON and CSV keep their booleans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


def _files(tmp_path: Path) -> tuple[str, str]:
    good, bad = tmp_path / "good.safetensors", tmp_path / "nan.safetensors"
    save_file({"w": np.ones(3, np.float32)}, str(good))
    save_file({"w": np.array([np.nan, 1.0], np.float32)}, str(bad))
    return str(good), str(bad)


def test_md_is_one_marked_line_per_file_and_a_totals_line(tmp_path: Path) -> None:
    good, bad = _files(tmp_path)
    result = runner.invoke(app, ["check", good, bad, str(tmp_path / "gone.pt"), "--no-nan", "-f", "md"])
    assert result.exit_code == 2  # an unreadable file outranks a failed rule
    lines = result.stdout.splitlines()
    assert lines[0] == "statecli check: ❌ 2 of 3 file(s) failed"
    table = [ln for ln in lines if ln.startswith("| ")]
    assert table[0] == "| result | file | reasons |"
    assert table[1] == f"| ✅ | {good} | 2 rule(s) passed |"
    assert table[2].startswith(f"| ❌ | {bad} | no-nan: ")
    assert table[3].startswith(f"| ❌ | {tmp_path / 'gone.pt'} | read: ")
    assert lines[-1] == "**Totals:** 3 file(s): 1 ✅, 2 ❌; 5 check(s): 3 passed, 2 failed"
    assert "True" not in result.stdout and "False" not in result.stdout


def test_machine_formats_keep_booleans(tmp_path: Path) -> None:
    good, bad = _files(tmp_path)
    data = json.loads(runner.invoke(app, ["check", good, bad, "--no-nan", "-f", "json"]).stdout)
    assert [f["passed"] for f in data["findings"]] == [True, True, True, False]
    csv = runner.invoke(app, ["check", good, bad, "--no-nan", "-f", "csv"]).stdout
    assert csv.splitlines()[0] == "path,rule,passed,reason" and ",False," in csv


def test_summary_appends_the_md_table(tmp_path: Path) -> None:
    good, _ = _files(tmp_path)
    summary = tmp_path / "summary.md"
    summary.write_text("before\n")
    result = runner.invoke(app, ["check", good, "--summary", str(summary)])
    assert result.exit_code == 0
    text = summary.read_text()
    assert text.startswith("before\nstatecli check: ✅ 1 file(s) passed\n") and f"| ✅ | {good} |" in text
    assert "| result |" not in result.stdout  # the table view stays on stdout; the Markdown went to the file
