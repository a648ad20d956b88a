"""`statecli scan`, `load_checkpoint`, `inspect` and `check` against the malicious-checkpoint corpus
(benchmarks/scan_corpus.py): every scan verdict at least as severe as expected, dangerous files never
loaded, and no payload ever executed (the marker file a payload would create never appears).

A case statecli gets wrong is listed in SCAN_MISSES/LOAD_MISSES as a strict xfail with the reason."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.pickle_bytes import MARKER, RANK, Case
from benchmarks.scan_corpus import build_corpus
from statecli.analyses.scan import scan
from statecli.cli import app
from statecli.errors import BadInput, UnsafeContent
from statecli.load import load_checkpoint

runner = CliRunner()
HEAVY = ("zip-oversized-data-pkl",)

# Cases statecli got wrong, as strict xfails; empty since the fixes that followed the corpus.
SCAN_MISSES: dict[str, str] = {}
LOAD_MISSES: dict[str, str] = {}


def _light_cases() -> list[Case]:
    with tempfile.TemporaryDirectory(prefix="statecli-corpus-names-") as tmp:
        return build_corpus(tmp)


_CASES = _light_cases()
_ALL = [c.name for c in _CASES] + list(HEAVY)
_EXPECTED = {c.name: c.expected for c in _CASES} | {n: "dangerous" for n in HEAVY}
_TORCH_LOAD = {c.name: c.reaches_torch_load for c in _CASES} | {n: True for n in HEAVY}


def _params(names: list[str], misses: dict[str, str]) -> list[object]:
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=misses[n])) if n in misses else n for n in names]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    cases = build_corpus(tmp_path_factory.mktemp("scan-corpus"), heavy=True)
    assert [c.name for c in cases] == _ALL
    return {c.name: c for c in cases}


@pytest.fixture(autouse=True)
def _no_marker(corpus: dict[str, Case]) -> object:
    marker = Path(next(iter(corpus.values())).path).parent / MARKER
    assert not marker.exists()
    yield
    assert not marker.exists(), "a payload ran"


@pytest.mark.parametrize("name", _params(_ALL, SCAN_MISSES))
def test_scan_verdict(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    verdict = scan(case.path).verdict
    if case.expected in ("safe", "needs-trust") and name.startswith("control-"):
        assert verdict == case.expected, case.technique
    elif case.expected == "dangerous":
        assert verdict in ("dangerous", "malformed"), case.technique
    else:
        assert RANK[verdict] >= RANK[case.expected], case.technique


_REFUSE = [n for n in _ALL if _EXPECTED[n] == "dangerous" and _TORCH_LOAD[n]]


@pytest.mark.parametrize("name", _params(_REFUSE, LOAD_MISSES))
def test_load_refuses_dangerous(corpus: dict[str, Case], name: str) -> None:
    with pytest.raises((UnsafeContent, BadInput)):
        load_checkpoint(corpus[name].path)


@pytest.mark.parametrize("name", _ALL)
def test_inspect_and_check_never_execute(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    for args in (["inspect", case.path], ["check", case.path], ["scan", case.path]):
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1, 2, 3), (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if name.startswith("control-"):  # benign: read (0), or not a checkpoint at all (2), never a finding
        want = 2 if case.expected == "malformed" else 0
        assert runner.invoke(app, ["inspect", case.path]).exit_code == want


@pytest.mark.parametrize(("name", "code"), [
    ("control-state-dict", 0), ("control-safetensors", 0), ("control-argparse-namespace", 1),
    ("control-full-model", 1), ("global-os-system-p2", 3), ("memo-slot-overwritten", 3), ("zip-crc-mismatch", 3),
    ("legacy-sysinfo-payload", 3), ("dcp-metadata-os-system", 3), ("truncated-state-dict", 2),
    ("second-pickle-after-stop", 3), ("zip-trailing-pickle", 3), ("npz-object-array", 3), ("logging-filehandler", 3),
    ("control-full-model-gelu", 1), ("control-torchscript", 1), ("control-legacy-full-model", 1),
    ("control-not-checkpoint-png", 2), ("control-not-checkpoint-noise", 2), ("control-not-checkpoint-npy", 2),
    ("control-not-checkpoint-encrypted-zip", 2),
])
def test_scan_cli_exit_codes(corpus: dict[str, Case], name: str, code: int) -> None:
    result = runner.invoke(app, ["scan", corpus[name].path])
    assert result.exit_code == code, result.output


def test_corpus_covers_every_class(corpus: dict[str, Case]) -> None:
    assert {c.expected for c in corpus.values()} == {"safe", "needs-trust", "malformed", "dangerous"}
    assert all(os.path.exists(c.path) for c in corpus.values())
    assert len(corpus) >= 60
