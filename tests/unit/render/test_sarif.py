"""`--format sarif` (issue 26): the SARIF 2.1.0 schema's required properties, GitHub code scanning's
upload constraints, and fingerprints that name a finding, not the file's bytes."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from statecli.analyses.findings import Issue, Level
from statecli.cli import app
from statecli.render.sarif import MAX_RESULTS, sarif_log

runner = CliRunner()


class TrainingConfig:
    """A project class in a checkpoint: needs trust."""


def _payload(path: Path, canary: Path) -> Path:
    cmd = f"touch {shlex.quote(str(canary))}".encode()
    path.write_bytes(b"\x80\x02cposix\nsystem\n(X" + len(cmd).to_bytes(4, "little") + cmd + b"tR.")
    return path


def _trusting(path: Path, value: float = 1.0) -> Path:
    torch.save({"w": torch.full((2,), value), "cfg": TrainingConfig()}, path)
    return path


def assert_valid_sarif(log: dict[str, Any]) -> None:
    """The properties SARIF 2.1.0's schema requires, and what GitHub's upload checks on top."""
    assert log["version"] == "2.1.0" and isinstance(log["runs"], list) and len(log["runs"]) == 1
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert isinstance(driver["name"], str) and driver["name"]
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids)) and len(rule_ids) <= 25_000
    for rule in driver["rules"]:
        sev = rule["properties"].get("security-severity")
        assert sev is None or 0.0 <= float(sev) <= 10.0
    for inv in run.get("invocations", []):
        assert isinstance(inv["executionSuccessful"], bool)
        for note in inv.get("toolExecutionNotifications", []):
            assert note["message"]["text"]
    assert len(run["results"]) <= MAX_RESULTS
    for res in run["results"]:
        assert res["message"]["text"] and res["level"] in ("error", "warning", "note", "none")
        assert driver["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
        assert 1 <= len(res["locations"]) <= 1000  # GitHub: locations per result
        phys = res["locations"][0]["physicalLocation"]
        assert phys["artifactLocation"]["uri"] and phys["region"]["startLine"] >= 1
        assert not phys["artifactLocation"]["uri"].startswith("/")  # relative to the checkout
        assert res["partialFingerprints"]["primaryLocationLineHash"]


def _sarif(*args: str) -> tuple[int, dict[str, Any]]:
    res = runner.invoke(app, [*args, "--format", "sarif"])
    return res.exit_code, json.loads(res.stdout)


def test_scan_findings_become_sarif_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "canary"
    _payload(tmp_path / "evil.pt", canary)
    _trusting(tmp_path / "trust.pt")
    code, log = _sarif("scan", "evil.pt", "trust.pt")
    assert code == 3 and not canary.exists()
    assert_valid_sarif(log)
    by_rule = {r["ruleId"]: r for r in log["runs"][0]["results"]}
    evil = by_rule["scan/dangerous-global"]
    assert evil["level"] == "error" and evil["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "evil.pt"
    trust = by_rule["scan/needs-trust-global"]
    assert trust["level"] == "warning" and "TrainingConfig" in trust["message"]["text"]
    rules = {r["id"]: r for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert float(rules["scan/dangerous-global"]["properties"]["security-severity"]) > float(
        rules["scan/needs-trust-global"]["properties"]["security-severity"])


def test_a_fingerprint_names_the_finding_not_the_files_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _trusting(tmp_path / "m.pt", 1.0)
    first = _sarif("scan", "m.pt")[1]["runs"][0]["results"][0]["partialFingerprints"]
    _trusting(tmp_path / "m.pt", 7.0)  # other tensor bytes, the same finding at the same place
    again = _sarif("scan", str(tmp_path / "m.pt"))[1]["runs"][0]["results"][0]["partialFingerprints"]
    assert first == again
    (tmp_path / "m.pt").rename(tmp_path / "n.pt")
    assert _sarif("scan", "n.pt")[1]["runs"][0]["results"][0]["partialFingerprints"] != first


def test_check_failures_become_sarif_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from safetensors.torch import save_file

    save_file({"w": torch.tensor([float("nan"), 1.0])}, str(tmp_path / "m.safetensors"))
    code, log = _sarif("check", "m.safetensors", "--no-nan")
    assert code == 1
    assert_valid_sarif(log)
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["check/no-nan"]


def _issues(n: int, text: str = "x") -> list[Issue]:
    return [Issue(f"m{i}.pt", "scan/needs-trust-global", Level.WARNING, f"data.pkl: g{i}", text) for i in range(n)]


def test_more_results_than_github_takes_are_cut_with_a_note() -> None:
    log = sarif_log(_issues(MAX_RESULTS + 10))
    assert_valid_sarif(log)
    run = log["runs"][0]
    assert len(run["results"]) == MAX_RESULTS and run["properties"]["truncated"]
    assert f"{MAX_RESULTS} of {MAX_RESULTS + 10}" in run["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]


def test_a_log_over_the_size_limit_is_cut_below_it() -> None:
    log = sarif_log(_issues(400, "y" * 2_000), max_bytes=200_000)
    buf = io.StringIO()
    json.dump(log, buf)
    assert len(buf.getvalue()) <= 200_000 and 0 < len(log["runs"][0]["results"]) < 400
    assert log["runs"][0]["invocations"][0]["toolExecutionNotifications"]


def test_other_commands_refuse_sarif(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "m.safetensors"))
    res = runner.invoke(app, ["inspect", str(tmp_path / "m.safetensors"), "--format", "sarif"])
    assert res.exit_code == 2
