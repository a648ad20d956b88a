"""`check` speaks the same dtype and device language as the rest of statecli and refuses nonsense."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


@pytest.fixture
def half(tmp_path: Path) -> Path:
    path = tmp_path / "half.safetensors"
    save_file({"w": torch.ones(2, 2, dtype=torch.float16), "b": torch.zeros(2, dtype=torch.float16)}, str(path))
    return path


def _check(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["check", *args, "--format", "json"], env={"GITHUB_ACTIONS": "false"})
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("spelling", ["half", "fp16", "float16", "torch.float16", "F16"])
def test_param_dtypes_accept_every_spelling_cast_accepts(half: Path, spelling: str) -> None:
    code, out, _ = _check(str(half), "--param-dtypes", spelling)
    assert code == 0, out
    assert json.loads(out)["passed"] is True


@pytest.mark.parametrize("flag,value,word", [("--param-dtypes", "banana", "not a dtype"),
                                             ("--buffer-dtypes", "fp17", "not a dtype"),
                                             ("--devices", "gpu", "not a torch device"),
                                             ("--max-size", "2XB", "2XB")])
def test_nonsense_is_refused_with_the_option_named(half: Path, flag: str, value: str, word: str) -> None:
    code, out, err = _check(str(half), flag, value)
    assert code == 2
    assert word in err and "max-shard-size" not in err
    assert out == ""


def test_cuda_allows_any_cuda_index(tmp_path: Path) -> None:
    path = tmp_path / "cpu.pt"
    torch.save({"w": torch.ones(1)}, path)
    code, out, _ = _check(str(path), "--devices", "cuda")
    data = json.loads(out)
    assert code == 1
    reason = next(f["reason"] for f in data["findings"] if f["rule"] == "devices")
    assert "--device cuda" in reason  # the fix moves toward an allowed device, not to cpu


def test_config_comes_from_the_checked_files_project(tmp_path: Path, half: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.statecli.check]\nparam-dtypes = ["bfloat16"]\n')
    elsewhere = tmp_path.parent / f"{tmp_path.name}-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, _ = _check(str(half))
    assert code == 1
    assert any(f["rule"] == "dtypes" and not f["passed"] for f in json.loads(out)["findings"])


def test_dangerous_file_is_exit_3_and_needs_trust_fails_the_rule(tmp_path: Path, half: Path) -> None:
    import argparse
    import os
    import pickle

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"w": Evil()}, protocol=4))
    trust = tmp_path / "trust.pt"
    torch.save({"model": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=0.1)}, trust)
    code, out, _ = _check(str(half), str(evil))
    data = json.loads(out)
    assert code == 3 and data["unsafe"][0]["path"] == str(evil) and "system" in data["unsafe"][0]["finding"]
    assert not (tmp_path / "pwned").exists()
    code, out, _ = _check(str(trust))
    assert code == 1
    assert any(f["rule"] == "safe-pickle" and not f["passed"] and "needs-trust" in f["reason"]
               for f in json.loads(out)["findings"])


def test_a_pyproject_without_rules_does_not_hide_the_projects_rules(tmp_path: Path, half: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.statecli.check]\nparam-dtypes = ["bfloat16"]\n')
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "pyproject.toml").write_text('[project]\nname = "sub"\n')
    moved = sub / half.name
    half.rename(moved)
    code, out, _ = _check(str(moved))
    data = json.loads(out)
    assert code == 1 and data["rules_from"][str(moved)].startswith(str(tmp_path / "pyproject.toml"))


def test_a_bare_optimizer_file_is_named_as_such(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 3)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    path = tmp_path / "optimizer.bin"
    torch.save(opt.state_dict(), path)
    code, out, _ = _check(str(path), "--no-optimizer-state")
    reason = next(f["reason"] for f in json.loads(out)["findings"] if f["rule"] == "no-optimizer-state")
    assert code == 1 and "is an optimizer state dict" in reason and "strip" not in reason
    human = runner.invoke(app, ["inspect", str(path)], env={"NO_COLOR": "1"})
    first = human.stdout.splitlines()[0]
    assert "no model state" in first and "optimizer" in first
    assert "other containers" not in human.stdout
