"""`statecli batch` and `statecli report` on local files (issue 26): inputs, records, exit codes, shards,
fail-fast, resume after a half-written line, the result cache, and the report's formats."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.remote.corpus import EXIT, make_corpus
from tests.unit.render.test_sarif import assert_valid_sarif

runner = CliRunner()


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_run(recs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["input"]: {k: v for k, v in r.items() if k != "run"} for r in recs}


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    monkeypatch.chdir(tmp_path)
    return make_corpus(tmp_path / "c", 16, tmp_path / "canary")


def _batch(*args: str, stdin: str | None = None) -> Any:
    return runner.invoke(app, ["batch", *args], input=stdin)


def test_every_checkpoint_gets_a_record_and_the_worst_exit_code(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    res = _batch("scan", "c", "--ndjson", "out.ndjson", "--no-cache")
    assert res.exit_code == 3, res.output
    assert not (tmp_path / "canary").exists()
    recs = {r["input"]: r for r in _records(tmp_path / "out.ndjson")}
    assert set(recs) == {f"c/{name}" for name, _ in corpus}  # the shards of an index are not inputs of their own
    for name, kind in corpus:
        assert recs[f"c/{name}"]["exit_code"] == EXIT[kind], (name, kind)
    assert all(r["identity"]["size"] == os.path.getsize(r["input"]) for r in recs.values())


def test_globs_lists_and_folders_name_each_checkpoint_once(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    listed = "\n".join(["# from a list", "c/d0/m00000.safetensors", "c/d1/m00001.pt", ""])
    res = _batch("size", "c/**/*.safetensors", "c/d0", "--from-list", "-", "--ndjson", "out.ndjson", "--no-cache",
                 stdin=listed)
    names = [r["input"] for r in _records(tmp_path / "out.ndjson")]
    assert len(names) == len(set(names)) and "c/d1/m00001.pt" in names and res.exit_code == 3  # c/d0 holds a payload
    assert {n for n in names if n.endswith(".safetensors")} >= {f"c/{n}" for n, k in corpus if n.endswith(".safetensors")}


def test_a_glob_reads_a_shard_beside_its_index_once_and_takes_gguf_and_dcp(tmp_path: Path,
                                                                          corpus: list[tuple[str, str]]) -> None:
    _batch("scan", "c/**/*", "--ndjson", "out.ndjson", "--no-cache")
    recs = {r["input"]: r for r in _records(tmp_path / "out.ndjson")}
    assert set(recs) == {f"c/{name}" for name, _ in corpus}  # no shard on its own; the DCP folder as one
    assert {recs[f"c/{n}"]["format"] for n, k in corpus if k in ("gguf", "dcp")} == {"gguf", "torch.distributed.checkpoint"}
    _batch("scan", "c/**/*.distcp", "--ndjson", "dcp.ndjson", "--no-cache")  # a DCP folder's files: the folder
    assert [r["input"] for r in _records(tmp_path / "dcp.ndjson")] == [f"c/{n}" for n, k in corpus if k == "dcp"]


def test_shards_split_the_inputs_without_overlap(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    seen: list[str] = []
    for i in (1, 2, 3):
        _batch("scan", "c", "--ndjson", f"s{i}.ndjson", "--shard", f"{i}/3", "--no-cache")
        seen += [r["input"] for r in _records(tmp_path / f"s{i}.ndjson")]
    assert sorted(seen) == sorted(f"c/{n}" for n, _ in corpus)
    joined = runner.invoke(app, ["report", "s1.ndjson", "s2.ndjson", "s3.ndjson", "--format", "json"])
    assert json.loads(joined.stdout)["records"] == len(corpus)  # a sharded run's outputs, reported together
    assert _batch("scan", "c", "--ndjson", "x.ndjson", "--shard", "4/3").exit_code == 2


def test_fail_fast_stops_at_the_first_failure(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    """No record after the first failure, and no checkpoint starts after it."""
    bad = next(f"c/{n}" for n, k in corpus if k == "payload")
    good = [f"c/{n}" for n, k in corpus if EXIT[k] == 0]
    res = _batch("scan", bad, *good, "--ndjson", "out.ndjson", "--fail-fast", "--no-cache")
    written = [r["input"] for r in _records(tmp_path / "out.ndjson")]
    assert res.exit_code == 3 and written == [bad], written
    res = _batch("scan", bad, *good, "--ndjson", "out.ndjson", "--keep-going", "--no-cache")
    assert len(_records(tmp_path / "out.ndjson")) == 1 + len(good)


def test_resume_redoes_a_half_written_line_and_nothing_else(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    out = tmp_path / "out.ndjson"
    _batch("scan", "c", "--ndjson", str(out), "--no-cache")
    full = _records(out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:5]) + lines[5][:40])  # killed while writing the sixth record
    res = _batch("scan", "c", "--ndjson", str(out), "--resume", "--no-cache")
    assert res.exit_code == 3
    again = _records(out)
    assert [r["id"] for r in again[:5]] == [r["id"] for r in full[:5]]  # kept, not redone
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in full)
    assert _without_run(again) == _without_run(full)


def test_the_cache_answers_an_unchanged_file_and_rereads_a_changed_one(tmp_path: Path,
                                                                      corpus: list[tuple[str, str]]) -> None:
    cache = str(tmp_path / "cache")
    _batch("inspect", "c", "--ndjson", "a.ndjson", "--cache-dir", cache)
    _batch("inspect", "c", "--ndjson", "b.ndjson", "--cache-dir", cache)
    first, second = _records(tmp_path / "a.ndjson"), _records(tmp_path / "b.ndjson")
    assert _without_run(first) == _without_run(second)
    cached = {r["input"] for r in second if r["run"]["cached"]}
    files = {r["input"] for r in second if r["identity"]["content"]}
    folders = sum(k in ("sharded", "dcp") for _, k in corpus)  # an index or DCP folder (its shards may change)
    assert cached == files and len(files) == len(corpus) - folders  # is never cached
    changed = next(f"c/{n}" for n, k in corpus if k == "safetensors")
    os.utime(changed, ns=(1, 1))
    _batch("inspect", changed, "--ndjson", "c.ndjson", "--cache-dir", cache)
    assert not _records(tmp_path / "c.ndjson")[0]["run"]["cached"]
    _batch("inspect", changed, "--ndjson", "d.ndjson", "--cache-dir", cache, "--stats")  # other options: another key
    assert not _records(tmp_path / "d.ndjson")[0]["run"]["cached"]


def test_a_warm_run_sends_only_the_cache_misses_to_its_workers(tmp_path: Path, corpus: list[tuple[str, str]],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached record is answered by the run itself (a worker's round trip cost more than the look-up: the
    fixed cost of a warm 10,000-object run); only what the cache cannot answer reaches the executor."""
    from statecli.batch.executors import LocalExecutor

    args = ("scan", "c", "--cache-dir", str(tmp_path / "cache"), "--jobs", "4")
    _batch(*args, "--ndjson", "a.ndjson")
    sent: list[str] = []
    records = LocalExecutor.records

    def spy(self: LocalExecutor, tasks: Any, stop: Any) -> Any:
        tasks = list(tasks)
        sent.extend(t.input for t in tasks)
        return records(self, tasks, stop)

    monkeypatch.setattr(LocalExecutor, "records", spy)
    res = _batch(*args, "--ndjson", "b.ndjson")
    first, again = _records(tmp_path / "a.ndjson"), _records(tmp_path / "b.ndjson")
    assert res.exit_code == 3 and _without_run(again) == _without_run(first)
    cached = {r["input"] for r in again if r["run"]["cached"]}
    assert cached and sorted(sent) == sorted({r["input"] for r in again} - cached)  # the index, the DCP folder


def test_report_aggregates_the_records(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    _batch("scan", "c", "--ndjson", "out.ndjson", "--no-cache")
    res = runner.invoke(app, ["report", "out.ndjson", "--format", "json"])
    assert res.exit_code == 3
    d = json.loads(res.stdout)
    assert d["records"] == len(corpus) and d["by_outcome"]["dangerous"] == sum(k == "payload" for _, k in corpus)
    assert {f["rule"] for f in d["top_findings"]} >= {"scan/dangerous-global", "scan/needs-trust-global"}
    suite = ET.fromstring(runner.invoke(app, ["report", "out.ndjson", "--format", "junit"]).stdout.split("?>", 1)[1])
    assert len(suite.findall(".//testcase")) == len(corpus) and suite.findall(".//failure")
    assert_valid_sarif(json.loads(runner.invoke(app, ["report", "out.ndjson", "--format", "sarif"]).stdout))
    page = runner.invoke(app, ["report", "out.ndjson", "--format", "html"]).stdout
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert "| dangerous |" in runner.invoke(app, ["report", "out.ndjson"]).stdout
    assert runner.invoke(app, ["report", "missing.ndjson"]).exit_code == 2


def test_check_and_size_records(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    st = [f"c/{n}" for n, k in corpus if k == "safetensors"]
    res = _batch("check", *st, "--rules", '{"devices": "cpu", "max-size": 10}', "--ndjson", "c.ndjson", "--no-cache")
    recs = _records(tmp_path / "c.ndjson")
    assert res.exit_code == 1 and all(not r["passed"] for r in recs)
    assert {f["rule"] for r in recs for f in r["findings"]} == {"check/max-size"}
    _batch("size", *st, "--ndjson", "s.ndjson", "--no-cache")
    assert all(r["summary"]["tensors"] >= 2 for r in _records(tmp_path / "s.ndjson"))


def test_usage_errors_are_one_line(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    for args in (["scan", "c"], ["scan", "--ndjson", "o"], ["scan", "c", "--ndjson", "o", "--executor", "ray"],
                 ["scan", "nothing/*.pt", "--ndjson", "o"], ["check", "c", "--ndjson", "o", "--rules", "[1"]):
        res = _batch(*args)
        assert res.exit_code == 2 and "Traceback" not in res.output, (args, res.output)


def test_an_unreachable_dask_scheduler_is_one_line_within_the_connect_timeout(tmp_path: Path,
                                                                             corpus: list[tuple[str, str]]) -> None:
    """A closed port: distributed retries for 30 s by default (20 s here before); now its connect timeout
    is ours, and its OSError (which repeats the address) becomes our one line with what to do."""
    pytest.importorskip("distributed")
    import socket

    from statecli.batch import executors

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    res = _batch("scan", "c", "--ndjson", "o.ndjson", "--executor", f"dask://127.0.0.1:{port}")
    assert res.exit_code == 2 and executors.CONNECT_TIMEOUT_S <= 5, res.output
    assert res.output.strip() == (f"statecli: error: dask://127.0.0.1:{port}: no Dask scheduler answered within "
                                  f"{executors.CONNECT_TIMEOUT_S} s; start one there (dask scheduler) or use "
                                  "--executor dask:local")
    assert not (tmp_path / "o.ndjson").exists()  # nothing was run, nothing written


@pytest.mark.slow
def test_worker_processes_give_the_records_of_one_thread(tmp_path: Path, corpus: list[tuple[str, str]]) -> None:
    """inspect reads values with --stats: --jobs runs it in processes; the records are the same."""
    _batch("inspect", "c", "--stats", "--ndjson", "one.ndjson", "--no-cache")
    res = _batch("inspect", "c", "--stats", "--ndjson", "many.ndjson", "--no-cache", "--jobs", "2")
    many = _records(tmp_path / "many.ndjson")
    assert res.exit_code == 3 and _without_run(many) == _without_run(_records(tmp_path / "one.ndjson"))
    assert os.getpid() not in {r["run"]["pid"] for r in many}


@pytest.mark.parametrize(("info", "content"), [
    ({"size": 5, "ETag": '"0cc175b9c0f1b6a831c399e269772661"'}, "etag:0cc175b9c0f1b6a831c399e269772661"),
    ({"size": 5, "ETag": '"0cc175b9c0f1b6a831c399e269772661-3"'}, None),  # multipart: not a content hash
    ({"size": 5, "ETag": 'W/"0cc175b9c0f1b6a831c399e269772661"'}, None),  # weak
    ({"size": 5, "ETag": '"v17"', "VersionId": "3HL4kqtJlcpXroDTDmJ"}, "version:3HL4kqtJlcpXroDTDmJ"),
    ({"size": 5, "lfs": {"sha256": "ab" * 32}}, "lfs-sha256:" + "ab" * 32),
    ({"size": 5}, None),
])
def test_a_remote_identity_names_content_only_when_the_backend_does(info: dict[str, Any], content: str | None) -> None:
    from statecli.batch.record import Command, cache_key, identity

    ident = identity("s3://bucket/m.safetensors", info)
    assert ident["content"] == content and ident["size"] == 5
    assert (cache_key(ident, Command.SCAN, ()) is None) == (content is None)


def test_a_listed_object_costs_its_cached_record_no_file_system(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached second run over a bucket: the listing said size and ETag, so an object's identity resolves
    no fsspec file system (~0.06 ms of the ~0.13 ms a cached record cost)."""
    from statecli.batch.record import identity
    from statecli.io import source

    def no_fs(name: str) -> Any:
        raise AssertionError(f"file system resolved for {name}")

    monkeypatch.setattr(source, "_filesystem", no_fs)
    ident = identity("s3://bucket/m.safetensors", {"size": 8, "ETag": '"' + "ab" * 16 + '"'})
    assert ident == {"url": "s3://bucket/m.safetensors", "size": 8, "content": "etag:" + "ab" * 16}

