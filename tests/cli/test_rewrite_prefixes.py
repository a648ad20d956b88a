"""Key prefix repair: --strip-prefix/--add-prefix/--rename on every rewrite command and `statecli rename`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2))


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


@pytest.fixture
def dp_file(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    model = _net()
    path = tmp_path / "dp.pt"
    torch.save(torch.nn.DataParallel(model).state_dict(), path)
    return path, model


def test_rename_strip_prefix_loads_strictly(tmp_path: Path, dp_file: tuple[Path, torch.nn.Module]) -> None:
    path, model = dp_file
    with pytest.raises(RuntimeError, match="Missing key"):
        _net().load_state_dict(torch.load(path, weights_only=True), strict=True)
    out = tmp_path / "plain.pt"
    stdout = _ok(["rename", str(path), "--strip-prefix", "module.", "-o", str(out)])
    assert "renamed" in stdout
    fresh = _net()
    fresh.load_state_dict(torch.load(out, weights_only=True), strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    # the per-module versions (_metadata) follow the new names, as torch's consume_prefix does
    meta = torch.load(out, weights_only=True)._metadata
    assert "1" in meta and not any(k.startswith("module") for k in meta)


@pytest.mark.parametrize("command", [["cast", "--dtype", "float64"], ["strip", "--pattern", "^nothing$"],
                                     ["move", "--device", "cpu"], ["convert"]])
def test_every_rewrite_command_strips_prefixes(tmp_path: Path, dp_file: tuple[Path, torch.nn.Module],
                                               command: list[str]) -> None:
    path, _ = dp_file
    out = tmp_path / "out.safetensors"
    _ok([command[0], str(path), *command[1:], "--strip-prefix", "module.", "-o", str(out)])
    _net().double().load_state_dict(load_file(str(out)), strict=True)


def test_add_prefix_and_regex_rename_on_model_state_only(tmp_path: Path) -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 3, 3)).sum().backward()
    opt.step()
    path = tmp_path / "train.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 7}, path)
    out = tmp_path / "renamed.pt"
    _ok(["cast", str(path), "--dtype", "half", "--rename", r"^(\d)\.=layer\1.", "--add-prefix", "net.",
         "-o", str(out)])
    got = torch.load(out, weights_only=True)
    assert set(got["model"]) == {f"net.layer{k}" for k in model.state_dict()}
    assert got["epoch"] == 7 and got["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    assert set(got["optimizer"]["state"]) == set(opt.state_dict()["state"])  # optimizer keys untouched


def test_collisions_and_bad_rules_are_usage_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save({"module.w": torch.ones(2), "w": torch.zeros(2)}, path)
    out = tmp_path / "o.pt"
    result = runner.invoke(app, ["rename", str(path), "--strip-prefix", "module.", "-o", str(out)])
    assert result.exit_code == 2 and "would both be renamed to 'w'" in result.stderr and not out.exists()
    bad = runner.invoke(app, ["rename", str(path), "--rename", "(=x", "-o", str(out)])
    assert bad.exit_code == 2 and "regular expression" in bad.stderr
    none = runner.invoke(app, ["rename", str(path), "-o", str(out)])
    assert none.exit_code == 2 and "--strip-prefix" in none.stderr


def test_rename_dry_run_json_lists_renames(tmp_path: Path, dp_file: tuple[Path, torch.nn.Module]) -> None:
    path, model = dp_file
    data = json.loads(_ok(["rename", str(path), "--strip-prefix", "module.", "--dry-run", "-f", "json"]))
    renamed = {r["name"]: r["detail"] for r in data["changes"] if r["what"] == "renamed"}
    assert renamed == {f"module.{k}": k for k in model.state_dict()}
    assert data["output"] is None and data["dry_run"]


def test_an_ema_copy_with_the_same_prefix_is_pointed_out(tmp_path: Path) -> None:
    sd = {"module.w": torch.ones(2), "module.b": torch.ones(1)}
    src = tmp_path / "dp.pt"
    torch.save({"model": sd, "model_ema": dict(sd), "epoch": 1}, src)
    out = tmp_path / "out.pt"
    result = runner.invoke(app, ["rename", str(src), "--strip-prefix", "module.", "-o", str(out), "-f", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert any("model_ema" in n and "--key model_ema" in n for n in data["notes"])
    fixed = runner.invoke(app, ["rename", str(out), "--key", "model_ema", "--strip-prefix", "module.",
                                "-o", str(tmp_path / "both.pt")])
    assert fixed.exit_code == 0, fixed.stderr
    both = torch.load(tmp_path / "both.pt", weights_only=True)
    assert set(both["model"]) == set(both["model_ema"]) == {"w", "b"}
