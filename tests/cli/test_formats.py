"""Every read command gives every output format from the same result, or refuses it in one line."""

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


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("formats")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    a, b = folder / "a.pt", folder / "b.pt"
    torch.save(net.state_dict(), a)
    sd = net.state_dict()
    sd["0.weight"] = sd["0.weight"] + 1
    torch.save(sd, b)
    return a, b


COMMANDS = {
    "inspect": lambda a, b: ["inspect", str(a)],
    "size": lambda a, b: ["size", str(a)],
    "diff": lambda a, b: ["diff", str(a), str(b)],
    "scan": lambda a, b: ["scan", str(a), str(b)],
    "check": lambda a, b: ["check", str(a), "--no-nan"],
    "show": lambda a, b: ["show", str(a), "0.weight"],
}


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "md"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_read_command_every_format(pair: tuple[Path, Path], command: str, fmt: str) -> None:
    result = runner.invoke(app, [*COMMANDS[command](*pair), "--format", fmt], env={"GITHUB_ACTIONS": "false"})
    assert result.exit_code in (0, 1), result.stdout + result.stderr
    out = result.stdout
    assert out.strip()
    if fmt == "json":
        assert json.loads(out)["schema_version"] == 1
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows)
    elif fmt == "md":
        assert "|---|" in out


@pytest.mark.parametrize("command", ["scan", "check"])
def test_html_is_refused_where_there_is_no_report(pair: tuple[Path, Path], command: str) -> None:
    result = runner.invoke(app, [*COMMANDS[command](*pair), "--format", "html"], env={"GITHUB_ACTIONS": "false"})
    assert result.exit_code == 2  # a usage error: the option itself does not offer html here
    assert "'html' is not one of" in result.stderr and "Traceback" not in result.stderr and result.stdout == ""
