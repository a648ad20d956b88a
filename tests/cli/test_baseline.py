"""`--baseline FILE` (issue 26): accepted findings, each with an owner and an expiry date, no longer fail
`scan` or `check` until they expire; then they count again and a note says so."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


class TrainingConfig:
    """A project class in a checkpoint: needs trust (scan exit 1)."""


def _days(n: int) -> str:
    return (dt.date.today() + dt.timedelta(days=n)).isoformat()


def _baseline(tmp_path: Path, *entries: dict[str, Any], name: str = "baseline.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"accepted": list(entries)}))
    return str(path)


@pytest.fixture
def trusting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.ones(2), "cfg": TrainingConfig()}, tmp_path / "m.pt")
    return "m.pt"


def test_an_accepted_finding_no_longer_fails_scan(tmp_path: Path, trusting: str) -> None:
    assert runner.invoke(app, ["scan", trusting]).exit_code == 1
    base = _baseline(tmp_path, {"rule": "scan/needs-trust-global", "path": "*.pt", "owner": "ml-platform",
                                "expires": _days(30), "reason": "our own config class"})
    res = runner.invoke(app, ["scan", trusting, "--baseline", base, "--format", "json"])
    assert res.exit_code == 0, res.output
    accepted = json.loads(res.stdout)["accepted"]
    assert [a["owner"] for a in accepted] == ["ml-platform"] and "TrainingConfig" in accepted[0]["location"]


def test_an_expired_acceptance_counts_again_and_says_so(tmp_path: Path, trusting: str) -> None:
    base = _baseline(tmp_path, {"rule": "scan/needs-trust-global", "path": "m.pt", "owner": "alice",
                                "expires": _days(-1)})
    res = runner.invoke(app, ["scan", trusting, "--baseline", base])
    assert res.exit_code == 1
    assert "expired" in res.stderr and "alice" in res.stderr


def test_a_fingerprint_from_the_sarif_output_accepts_that_finding_only(tmp_path: Path, trusting: str) -> None:
    log = json.loads(runner.invoke(app, ["scan", trusting, "--format", "sarif"]).stdout)
    fp = log["runs"][0]["results"][0]["partialFingerprints"]["primaryLocationLineHash"]
    base = _baseline(tmp_path, {"fingerprint": fp, "owner": "bob", "expires": _days(1)}, name="b.toml")
    Path(base).write_text(f'[[accepted]]\nfingerprint = "{fp}"\nowner = "bob"\nexpires = {_days(1)}\n')
    assert runner.invoke(app, ["scan", trusting, "--baseline", base]).exit_code == 0
    sarif = json.loads(runner.invoke(app, ["scan", trusting, "--baseline", base, "--format", "sarif"]).stdout)
    assert sarif["runs"][0]["results"][0]["suppressions"][0]["kind"] == "external"
    torch.save({"w": torch.ones(2), "cfg": TrainingConfig(), "x": dt.date(2020, 1, 1)}, "m.pt")  # a new finding
    assert runner.invoke(app, ["scan", trusting, "--baseline", base]).exit_code == 1


def test_check_honours_the_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_file({"w": torch.tensor([float("nan"), 1.0])}, "m.safetensors")
    assert runner.invoke(app, ["check", "m.safetensors", "--no-nan"]).exit_code == 1
    base = _baseline(tmp_path, {"rule": "check/no-nan", "path": "m.safetensors", "owner": "carol",
                                "expires": _days(5)})
    res = runner.invoke(app, ["check", "m.safetensors", "--no-nan", "--baseline", base, "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    nan = next(f for f in out["findings"] if f["rule"] == "no-nan")
    assert out["passed"] and nan["passed"] and "carol" in nan["reason"] and out["accepted"][0]["owner"] == "carol"


@pytest.mark.parametrize("entry", [
    {"rule": "scan/needs-trust-global", "expires": "2030-01-01"},  # no owner
    {"rule": "scan/needs-trust-global", "owner": "x"},  # no expiry
    {"rule": "scan/needs-trust-global", "owner": "x", "expires": "next week"},
    {"owner": "x", "expires": "2030-01-01"},  # names no finding
])
def test_an_entry_without_owner_expiry_or_finding_is_refused(tmp_path: Path, trusting: str,
                                                             entry: dict[str, Any]) -> None:
    res = runner.invoke(app, ["scan", trusting, "--baseline", _baseline(tmp_path, entry)])
    assert res.exit_code == 2 and "Traceback" not in res.output and "baseline.json" in res.stderr
