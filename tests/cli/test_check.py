"""`statecli check` rules (pass and fail), config files, JUnit XML, GitHub annotations, pre-commit hook;
`statecli scan` verdicts on plain cases (the adversarial corpus lives in tests/security/)."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.cli import app
from tests.conftest import ROOT

runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    sd = model.state_dict()
    good = tmp_path / "good.safetensors"
    save_file({k: v for k, v in sd.items()}, str(good))
    half = tmp_path / "half.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, half)
    nan = tmp_path / "nan.pt"
    bad = dict(sd)
    bad["0.weight"] = sd["0.weight"].clone()
    bad["0.weight"][0, 0] = float("nan")
    bad["0.bias"] = torch.tensor([float("inf"), 0.0, 1.0])
    torch.save(bad, nan)
    opt = torch.optim.SGD(model.parameters(), momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    train = tmp_path / "train.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "args": argparse.Namespace(lr=0.1)}, train)
    return {"good": good, "half": half, "nan": nan, "train": train}


def _check(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["check", *args, "--format", "json"], env={"GITHUB_ACTIONS": "false"})
    return result.exit_code, json.loads(result.stdout)


def _rule(data: dict, path: Path, rule: str) -> dict:
    return next(f for f in data["findings"] if f["path"] == str(path) and f["rule"] == rule)


def test_safe_pickle_default_on(files: dict[str, Path]) -> None:
    code, data = _check(str(files["good"]), str(files["train"]))
    assert code == 1
    assert _rule(data, files["good"], "safe-pickle")["passed"]
    train = _rule(data, files["train"], "safe-pickle")
    assert not train["passed"] and "argparse.Namespace" in train["reason"]
    code, _ = _check(str(files["good"]))
    assert code == 0


def test_nan_inf_rules(files: dict[str, Path]) -> None:
    code, data = _check(str(files["nan"]), str(files["good"]), "--no-nan", "--no-inf")
    assert code == 1
    assert not _rule(data, files["nan"], "no-nan")["passed"] and "0.weight" in _rule(data, files["nan"], "no-nan")["reason"]
    assert not _rule(data, files["nan"], "no-inf")["passed"] and "0.bias" in _rule(data, files["nan"], "no-inf")["reason"]
    assert _rule(data, files["good"], "no-nan")["passed"] and _rule(data, files["good"], "no-inf")["passed"]


def test_dtype_size_device_key_optimizer_format_rules(files: dict[str, Path]) -> None:
    code, data = _check(str(files["half"]), str(files["good"]), "--param-dtypes", "float16", "--max-size", "2KB",
                        "--devices", "cpu", "--required-key", r"running_var$", "--forbidden-key", r"^0\.bias$",
                        "--require-format", "safetensors")
    assert code == 1
    assert _rule(data, files["half"], "dtypes")["passed"] and not _rule(data, files["good"], "dtypes")["passed"]
    size = files["half"].stat().st_size
    assert _rule(data, files["half"], "max-size")["passed"] == (size <= 2000)
    assert _rule(data, files["good"], "devices")["passed"]
    assert _rule(data, files["good"], "required-keys")["passed"]
    assert not _rule(data, files["good"], "forbidden-keys")["passed"]
    assert _rule(data, files["good"], "format")["passed"] and not _rule(data, files["half"], "format")["passed"]
    code, data = _check(str(files["train"]), "--no-safe-pickle", "--no-optimizer-state")
    assert code == 1 and not _rule(data, files["train"], "no-optimizer-state")["passed"]


def test_devices_rule_catches_cuda(samples: Path) -> None:
    code, data = _check(str(samples / "cuda.pt"), "--devices", "cpu")
    assert code == 1 and "statecli move" in _rule(data, samples / "cuda.pt", "devices")["reason"]


def test_matches_model(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import torch\ndef make(n=3):\n    return torch.nn.Linear(n, n)\n")
    torch.save(torch.nn.Linear(3, 3).state_dict(), tmp_path / "ok.pt")
    torch.save(torch.nn.Linear(4, 4).state_dict(), tmp_path / "no.pt")
    code, data = _check(str(tmp_path / "ok.pt"), str(tmp_path / "no.pt"), "--model", f"{src}:make")
    assert code == 1
    assert _rule(data, tmp_path / "ok.pt", "matches-model")["passed"]
    assert "shape mismatch" in _rule(data, tmp_path / "no.pt", "matches-model")["reason"]


def test_config_file_with_overrides(tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.statecli.check]\nno-nan = true\nmax-size = "1GB"\n'
        '[[tool.statecli.check.overrides]]\npaths = ["*.safetensors"]\nparam-dtypes = ["float16"]\n')
    monkeypatch.chdir(tmp_path)
    code, data = _check(str(files["nan"]), str(files["good"]))
    assert code == 1
    assert not _rule(data, files["nan"], "no-nan")["passed"]
    assert _rule(data, files["nan"], "max-size")["passed"]
    assert not _rule(data, files["good"], "dtypes")["passed"]  # override applies to *.safetensors only
    assert not any(f["rule"] == "dtypes" for f in data["findings"] if f["path"] == str(files["nan"]))
    other = tmp_path / "rules.toml"
    other.write_text('[check]\ndevices = "cpu"\nsafe-pickle = false\n')
    code, data = _check(str(files["train"]), "--config", str(other))
    assert code == 0 and {f["rule"] for f in data["findings"]} == {"devices"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[check]\nno-such-rule = true\n')
    result = runner.invoke(app, ["check", str(files["good"]), "--config", str(bad)])
    assert result.exit_code == 2 and "no-such-rule" in result.stderr


def test_junit_and_github_annotations(tmp_path: Path, files: dict[str, Path]) -> None:
    junit = tmp_path / "report.xml"
    result = runner.invoke(app, ["check", str(files["good"]), str(files["nan"]), "--no-nan", "--junit", str(junit),
                                 "--github"])
    assert result.exit_code == 1
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert {c.get("name") for c in cases} == {"safe-pickle", "no-nan"}
    failed = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [(str(files["nan"]), "no-nan")]
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("::error")]
    assert len(lines) == 1
    assert lines[0].startswith(f"::error file={files['nan']},title=statecli no-nan::")


def test_unreadable_input_exit_2(tmp_path: Path, files: dict[str, Path]) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, data = _check(str(files["good"]), str(junk))
    assert code == 2 and data["errors"][0]["path"] == str(junk)


def test_scan_verdicts(tmp_path: Path, files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["scan", str(files["good"]), str(files["half"]), "--format", "json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1 and {r["verdict"] for r in report["files"]} == {"safe"}
    result = runner.invoke(app, ["scan", str(files["train"]), "--format", "json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["files"][0]["verdict"] == "needs-trust"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"w": Evil()}, protocol=4))
    result = runner.invoke(app, ["scan", str(evil), "--format", "json"])
    data = json.loads(result.stdout)["files"][0]
    assert result.exit_code == 3 and data["verdict"] == "dangerous"
    assert any(g["name"] in ("posix.system", "os.system", "nt.system") for g in data["globals"])
    assert any(c["opcode"] == "REDUCE" for c in data["calls"])
    assert not (tmp_path / "pwned").exists()


def test_pre_commit_hook_entry_runs(files: dict[str, Path]) -> None:
    """The hook's entry, run as pre-commit runs it: the command plus the staged file names."""
    import yaml  # type: ignore[import-untyped]

    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "statecli-check")
    exe = Path(sys.executable).with_name(hook["entry"].split()[0])
    cmd = [str(exe), *hook["entry"].split()[1:], str(files["good"]), str(files["half"])]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "GITHUB_ACTIONS": ""})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(cmd[:-2] + [str(files["train"])], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1


def test_check_a_folder_checks_every_checkpoint_once(samples: Path, tmp_path: Path) -> None:
    code, data = _check(str(samples))
    paths = {f["path"] for f in data["findings"]}
    assert str(samples / "sharded" / "model.safetensors.index.json") in paths  # one entry for the index...
    assert not any("model-00001-of-00002" in p for p in paths)  # ...not its shards again
    assert str(samples / "dcp") in paths and str(samples / "cnn.pt") in paths
    assert code == 1 and data["errors"] == []  # full_model.pt needs trust: a rule failure, not an error
    empty = tmp_path / "empty"
    empty.mkdir()
    code, data = _check(str(empty))
    assert code == 2 and "no checkpoint" in data["errors"][0]["error"]
