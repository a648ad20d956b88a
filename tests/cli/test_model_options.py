"""The model-evidence options (--model, --model-arg, --model-kwargs, --hf-config, --no-hf-config) are declared once
(cli/options.py's @model_options) and handed to each command as one ModelChoice: every command that takes them lists
each once in --help, and given them, classifies against the model they build."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()
EVIDENCE = ["--model", "--model-arg", "--model-kwargs", "--hf-config", "--no-hf-config"]
MODEL_SRC = '''import torch
from torch import nn
class M(nn.Module):
    def __init__(self, n, m=1):
        super().__init__()
        self.lin = nn.Linear(n, m)
        self.register_buffer("scale", torch.ones(n), persistent=False)
'''


@pytest.mark.parametrize("command", ["inspect", "size", "show", "cast", "strip", "check"])
def test_help_lists_each_evidence_option_once(command: str) -> None:
    got = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert got.exit_code == 0, got.output
    options = re.findall(r"^\s+(--[a-z-]+)", got.output, re.M)
    wanted = [o for o in EVIDENCE if not (command == "check" and o == "--model-kwargs")]  # check: --model is a rule
    assert [o for o in options if o in EVIDENCE] == wanted, got.output


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, list[str]]:
    (tmp_path / "m.py").write_text(MODEL_SRC)
    lin = torch.nn.Linear(4, 2)
    torch.save({"lin.weight": lin.weight.detach(), "lin.bias": lin.bias.detach(), "scale": torch.ones(4)},
               tmp_path / "m.pt")
    # n and m only reach the model through --model-arg and --model-kwargs: wrong ones would not match the shapes
    return tmp_path / "m.pt", ["--model", f"{tmp_path / 'm.py'}:M", "--model-arg", "n=4", "--model-kwargs",
                               '{"m": 2}']


def _json(args: list[str]) -> dict:
    got = runner.invoke(app, [*args, "-f", "json"])
    assert got.exit_code in (0, 1), got.output
    return json.loads(got.stdout)


def test_each_command_given_the_options_classifies_by_the_model(saved: tuple[Path, list[str]]) -> None:
    path, model = saved
    entries = {e["name"]: e for e in _json(["inspect", str(path), *model])["entries"]}
    assert {e["evidence"] for e in entries.values()} == {"model definition"}
    assert entries["scale"]["kind"] == "buffer (non-persistent)"
    assert _json(["show", str(path), "scale", *model])["entry"]["evidence"] == "model definition"
    assert "buffer (non-persistent)" in _json(["size", str(path), *model])["by_kind"]
    stripped = _json(["strip", str(path), "--non-persistent", "--dry-run", *model])["changes"]
    assert [c["name"] for c in stripped] == ["scale"]
    cast = _json(["cast", str(path), "--dtype", "half", "--only", "buffers", "--dry-run", *model])["changes"]
    assert [c["name"] for c in cast if c["what"] == "cast"] == ["scale"]


def _model_rule(args: list[str]) -> str:
    got = runner.invoke(app, ["check", *args, "-f", "json"])
    assert got.exit_code == 1, got.output
    return next(r["reason"] for r in json.loads(got.stdout)["findings"] if r["rule"] == "matches-model")


def test_check_takes_model_as_its_matches_model_rule(saved: tuple[Path, list[str]]) -> None:
    path, model = saved
    assert _model_rule([str(path), *model[:2], "--model-arg", "n=4", "--model-arg", "m=2"]) == "scale: unexpected"
    assert "lin.weight: shape mismatch" in _model_rule([str(path), *model[:2], "--model-arg", "n=5"])


def test_declared_once_and_handed_in_as_one_record() -> None:
    import inspect

    import statecli.cli as cli
    from statecli.state import ModelChoice

    folder = Path(cli.__file__).parent
    users = sorted(p.name for p in folder.glob("*.py") if re.search(r"\bModelOpt\b|\bHfConfigOpt\b", p.read_text()))
    assert users == ["options.py"]
    for command in ("inspect", "size", "show", "cast", "strip", "check"):
        callback = next(c.callback for c in cli.app.registered_commands if (c.name or c.callback.__name__) == command)
        body = inspect.unwrap(callback)
        assert inspect.signature(body, eval_str=True).parameters["evidence"].annotation is ModelChoice, command
