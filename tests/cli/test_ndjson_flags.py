"""`statecli scan|inspect|check|size ... --ndjson OUT` (issue 26): the same records as `statecli batch CMD`, by
the one code path; without --ndjson the batch options and extra inputs are refused, not ignored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.remote.corpus import make_corpus

runner = CliRunner()


def _records(path: Path) -> dict[str, dict[str, Any]]:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["input"]: {k: v for k, v in r.items() if k != "run"} for r in recs}


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    monkeypatch.chdir(tmp_path)
    return make_corpus(tmp_path / "c", 12, tmp_path / "canary")


@pytest.mark.parametrize(("command", "own", "alias"), [
    ("scan", ["--strict"], ["--strict"]),
    ("inspect", ["--stats"], ["--stats"]),
    ("size", ["--depth", "2"], ["--depth", "2"]),
    ("check", ["--no-nan", "--devices", "cpu"], ["--rules", '{"no-nan": true, "devices": "cpu"}']),
])
def test_each_command_with_ndjson_writes_the_records_of_batch(tmp_path: Path, corpus: list[tuple[str, str]],
                                                             command: str, own: list[str], alias: list[str]) -> None:
    inputs = ["c/d0", "c/**/*.pt"]
    direct = runner.invoke(app, [command, *inputs, *own, "--ndjson", "a.ndjson", "--no-cache", "-j", "2", "-q"])
    batch = runner.invoke(app, ["batch", command, *inputs, *alias, "--ndjson", "b.ndjson", "--no-cache", "-q"])
    assert direct.exit_code == batch.exit_code != 0, direct.output
    a, b = _records(tmp_path / "a.ndjson"), _records(tmp_path / "b.ndjson")
    assert len(a) > 3 and a == b  # task ids included: the options shape the record the same way
    assert not (tmp_path / "canary").exists()


def test_ndjson_options_reach_the_runner(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    (tmp_path / "list.txt").write_text("c/d1\n")
    res = runner.invoke(app, ["size", "c/d0", "--from-list", "list.txt", "--ndjson", "o.ndjson", "--shard", "1/1",
                              "--cache-dir", "cache", "-q"])
    names = set(_records(tmp_path / "o.ndjson"))
    assert names and all(n.startswith(("c/d0/", "c/d1/")) for n in names) and res.exit_code in (0, 2)
    assert any((tmp_path / "cache").iterdir())  # the cache directory given was used
    again = runner.invoke(app, ["size", "c/d0", "--from-list", "list.txt", "--ndjson", "o.ndjson", "--resume",
                                "--cache-dir", "cache"])
    assert f"0 record(s) written to o.ndjson, {len(names)} already there" in again.stderr


@pytest.mark.parametrize("args", [["inspect", "a.pt", "b.pt"], ["size", "a.pt", "b.pt"], ["scan", "a.pt", "-j", "4"],
                                  ["check", "a.pt", "--resume"], ["scan", "a.pt", "--from-list", "-"]])
def test_without_ndjson_many_inputs_and_batch_options_are_refused(tmp_path: Path, args: list[str]) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--ndjson OUT" in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize("command", ["scan", "check"])
def test_a_list_of_inputs_needs_no_positional_path(tmp_path: Path, command: str) -> None:
    """`ls *.pt | statecli scan --from-list - --ndjson out` (the list is the inputs); without a list or a path the
    command says what it needs in one line."""
    sample = Path(__file__).resolve().parents[2] / "sample_checkpoints"
    names = sorted(str(p) for p in sample.glob("*.pt"))
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "o.ndjson"
    from_file = runner.invoke(app, [command, "--from-list", str(tmp_path / "list.txt"), "--ndjson", str(out), "-q"])
    assert from_file.exit_code in (0, 1), from_file.output
    assert sorted(r["input"] for r in map(json.loads, out.read_text().splitlines())) == names
    piped = runner.invoke(app, [command, "--from-list", "-", "--ndjson", str(tmp_path / "p.ndjson"), "-q"],
                          input="\n".join(names) + "\n")
    assert piped.exit_code == from_file.exit_code and len((tmp_path / "p.ndjson").read_text().splitlines()) == len(names)
    bare = runner.invoke(app, [command])
    assert bare.exit_code == 2 and f"{command} needs a checkpoint" in bare.output and "Traceback" not in bare.output
