"""Batch runs over 127.0.0.1 servers (issue 26): the Range HTTP server with latency, 503-then-OK and 429
with Retry-After, and moto's S3 server; executors that give the same records; kill and --resume without
fetching a finished checkpoint again; globs over a bucket and the cache's second run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from statecli.cli import app
from statecli.io import source, traffic

from .corpus import EXIT, FILE_KINDS, KINDS, make_corpus
from .server import RangeServer

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same(recs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The records by input without the one field that measures the run."""
    return {r["input"]: {k: v for k, v in r.items() if k != "run"} for r in recs}


def _served(http: RangeServer, tmp_path: Path, n: int, folder: str) -> tuple[Path, list[tuple[str, str]]]:
    items = make_corpus(Path(http.root) / folder, n, tmp_path / "canary", FILE_KINDS)
    listing = tmp_path / f"{folder}.txt"
    listing.write_text("".join(http.url(f"{folder}/{name}") + "\n" for name, _ in items))
    return listing, items


def _batch(*args: str) -> Any:
    source.clear_cache()  # each run as a new process would make it: no sizes or blocks from the last one
    return runner.invoke(app, ["batch", *args, "--no-cache"])


# The suite size, N = 200, beside the small size each test is worked on with (both `slow`).
N = 200


@pytest.mark.slow
@pytest.mark.parametrize("n", [24, N])
def test_threads_give_the_records_of_one_worker(http: RangeServer, tmp_path: Path, n: int) -> None:
    listing, items = _served(http, tmp_path, n, f"threads{n}")
    http.behaviour.latency = 0.01
    one, many = tmp_path / "one.ndjson", tmp_path / "many.ndjson"
    assert _batch("scan", "--from-list", str(listing), "--ndjson", str(one)).exit_code == 3
    assert _batch("scan", "--from-list", str(listing), "--ndjson", str(many), "--jobs", "16").exit_code == 3
    assert _same(_records(one)) == _same(_records(many))
    assert http.log.max_in_flight > 1
    by_input = _same(_records(one))
    for name, kind in items:
        assert by_input[http.url(f"threads{n}/{name}")]["exit_code"] == EXIT[kind], (name, kind)
    assert not (tmp_path / "canary").exists()
    kinds = dict(items)
    for r in _records(many):  # each record counts its own requests: the single-file budget (size + one range)
        if kinds[r["input"].split(f"/threads{n}/", 1)[1]] in ("safetensors", "pt", "legacy", "payload", "trust"):
            assert 1 <= r["run"]["requests"] <= 3, r


@pytest.mark.slow
def test_503_then_ok_and_429_with_retry_after_change_nothing_but_the_run(http: RangeServer, tmp_path: Path) -> None:
    listing, _ = _served(http, tmp_path, 8, "flaky")
    clean = tmp_path / "clean.ndjson"
    _batch("scan", "--from-list", str(listing), "--ndjson", str(clean))
    for status, after in ((503, None), (429, "1")):
        http.behaviour.flaky, http.behaviour.flaky_status, http.behaviour.retry_after = 1, status, after
        http.behaviour.flaky_seen.clear()
        out = tmp_path / f"{status}.ndjson"
        _batch("scan", "--from-list", str(listing), "--ndjson", str(out), "--jobs", "4")
        recs = _records(out)
        assert _same(recs) == _same(_records(clean)), status
        assert all(r["run"]["retries"] >= 1 for r in recs)
        if after:
            assert all(r["run"]["waited"] >= 1.0 for r in recs)  # the wait the server asked for, not a backoff


def test_retry_after_and_ratelimit_headers_are_read() -> None:
    assert traffic.parse_wait("7") == 7.0
    assert traffic.parse_wait(None, '"api";r=0;t=55') == 55.0
    assert 0 <= (traffic.parse_wait("Wed, 21 Oct 2015 07:28:00 GMT") or 0) == 0.0  # a past date: no wait
    assert traffic.parse_wait("soon") is None


def test_the_request_rate_is_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    slept: list[float] = []
    monkeypatch.setattr(traffic.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(traffic.time, "sleep", lambda s: slept.append(s))
    traffic.set_max_rate(4)
    try:
        with traffic.counting() as c:
            for _ in range(5):
                traffic.count(0, 1)
    finally:
        traffic.set_max_rate(None)
    assert slept == [0.25, 0.5, 0.75, 1.0] and c.requests == 5 and c.waited == pytest.approx(2.5)


@pytest.mark.slow
@pytest.mark.parametrize(("n", "kill_after"), [(40, 12), (N, 70)])
def test_sigterm_then_resume_fetches_no_finished_checkpoint_again(http: RangeServer, tmp_path: Path, n: int,
                                                                  kill_after: int) -> None:
    listing, items = _served(http, tmp_path, n, f"resume{n}")
    http.behaviour.latency = 0.05
    out = tmp_path / "out.ndjson"
    cmd = [sys.executable, "-m", "statecli", "batch", "scan", "--from-list", str(listing), "--ndjson", str(out),
           "--no-cache", "--jobs", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and (not out.exists() or out.read_text().count("\n") < kill_after):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = set()
    for line in out.read_text().splitlines():
        try:
            finished.add(json.loads(line)["input"])
        except ValueError:
            pass  # the line the kill cut short: its checkpoint is not finished
    assert kill_after <= len(finished) < len(items)
    http.log.reset()
    http.behaviour.latency = 0.0
    res = runner.invoke(app, ["batch", "scan", "--from-list", str(listing), "--ndjson", str(out), "--no-cache",
                              "--resume", "--jobs", "4"])
    assert res.exit_code == 3, res.output
    recs = _records(out)
    assert len(recs) == len({r["input"] for r in recs}) == len(items)
    fetched = {http.url(p.lstrip("/")) for _, p, _ in http.log.requests}
    assert not fetched & finished


@pytest.mark.slow
@pytest.mark.parametrize("n", [16, N])
def test_dask_workers_give_the_records_of_local_threads(http: RangeServer, tmp_path: Path, n: int) -> None:
    distributed = pytest.importorskip("distributed")
    listing, _ = _served(http, tmp_path, n, f"dask{n}")
    local = tmp_path / "local.ndjson"
    _batch("scan", "--from-list", str(listing), "--ndjson", str(local))
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster:
        address = cluster.scheduler_address.removeprefix("tcp://")
        for executor in (f"dask://{address}", "dask:local"):
            out = tmp_path / f"{len(executor)}.ndjson"
            res = _batch("scan", "--from-list", str(listing), "--ndjson", str(out), "--executor", executor, "--jobs", "2")
            assert res.exit_code == 3, res.output
            recs = _records(out)
            assert _same(recs) == _same(_records(local)), executor
            assert os.getpid() not in {r["run"]["pid"] for r in recs}  # run in the worker processes


def test_a_glob_over_a_bucket_and_the_cache_on_a_second_run(s3: Any, tmp_path: Path) -> None:
    local = tmp_path / "src"
    make_corpus(local, 16, tmp_path / "canary")
    for path in local.rglob("*"):
        if path.is_file():
            s3.put(str(path), f"ckpt/models/{path.relative_to(local).as_posix()}")
    cache = str(tmp_path / "cache")
    args = ["batch", "inspect", "s3://ckpt/models/**/*.safetensors", "--cache-dir", cache]
    first = runner.invoke(app, [*args, "--ndjson", str(tmp_path / "a.ndjson")])
    recs = _records(tmp_path / "a.ndjson")
    wanted = {f"s3://ckpt/models/{p.relative_to(local).as_posix()}" for p in local.rglob("*.safetensors")}
    assert {r["input"] for r in recs} == wanted and first.exit_code == 2  # truncated and LFS pointer files
    assert all(r["identity"]["content"].startswith("etag:") for r in recs)  # moto's single-part ETag: an MD5
    runner.invoke(app, [*args, "--ndjson", str(tmp_path / "b.ndjson")])
    again = _records(tmp_path / "b.ndjson")
    ok = [r for r in again if "error" not in r]
    assert ok and all(r["run"]["cached"] and r["run"]["requests"] == 0 for r in ok)
    assert _same(again) == _same(recs)


def test_a_glob_over_a_bucket_reads_a_shard_beside_its_index_once(s3: Any, tmp_path: Path) -> None:
    """`**/*` lists a sharded checkpoint's index and its shards: the index's record covers them, no shard
    is an input of its own (read twice, counted twice); GGUF files are inputs like the rest; a DCP folder's
    `.metadata` and `.distcp` objects stand for the folder, one input (as a local glob gives it)."""
    local = tmp_path / "src"
    items = make_corpus(local, len(KINDS), tmp_path / "canary", KINDS)
    for path in local.rglob("*"):
        if path.is_file():
            s3.put(str(path), f"ckpt/zoo/{path.relative_to(local).as_posix()}")
    res = runner.invoke(app, ["scan", "s3://ckpt/zoo/**/*", "--ndjson", str(tmp_path / "a.ndjson"), "--no-cache"])
    recs = _same(_records(tmp_path / "a.ndjson"))
    assert set(recs) == {f"s3://ckpt/zoo/{name}" for name, _ in items} and res.exit_code == 3, res.output
    assert not any("-of-" in name for name in recs)  # the shards, read through their index only
    for name, kind in items:
        assert recs[f"s3://ckpt/zoo/{name}"]["exit_code"] == EXIT[kind], (name, kind)
    dcp = [f"s3://ckpt/zoo/{name}" for name, kind in items if kind == "dcp"]
    assert recs[dcp[0]]["format"] == "torch.distributed.checkpoint"
    runner.invoke(app, ["scan", "s3://ckpt/zoo/**/*.distcp", "--ndjson", str(tmp_path / "b.ndjson"), "--no-cache"])
    assert [r["input"] for r in _records(tmp_path / "b.ndjson")] == dcp  # `.metadata` not listed: asked for
    assert not (tmp_path / "canary").exists()


def test_a_glob_over_a_bucket_that_leaves_no_checkpoint_is_an_error(s3: Any, tmp_path: Path) -> None:
    """Objects matched but none a loader reads (a README): one error line, not an empty run that passes."""
    s3.pipe("ckpt/zoo/README.md", b"# the zoo")
    res = runner.invoke(app, ["scan", "s3://ckpt/zoo/*.md", "--ndjson", str(tmp_path / "c.ndjson"), "--no-cache"])
    assert res.exit_code == 2 and "s3://ckpt/zoo/*.md: the pattern matches no checkpoint" in res.output, res.output


def test_an_unchanged_url_is_not_read_again_with_the_cache(http: RangeServer, tmp_path: Path) -> None:
    """With a content ETag, a second run asks each URL for its metadata (HEAD) and reads no byte of it."""
    listing, items = _served(http, tmp_path, 8, "cached")
    http.behaviour.etag = True
    args = ["batch", "scan", "--from-list", str(listing), "--cache-dir", str(tmp_path / "cache")]
    runner.invoke(app, [*args, "--ndjson", str(tmp_path / "a.ndjson")])
    source.clear_cache()
    http.log.reset()
    runner.invoke(app, [*args, "--ndjson", str(tmp_path / "b.ndjson")])
    first, again = _records(tmp_path / "a.ndjson"), _records(tmp_path / "b.ndjson")
    assert _same(first) == _same(again)
    ok = [r for r in again if "error" not in r and r["identity"]["content"]]
    assert len(ok) >= len(items) - 3 and all(r["run"]["cached"] for r in ok)
    read = {p for method, p, _ in http.log.requests if method == "GET"}
    assert not read & {"/" + r["input"].split("/", 3)[3] for r in ok}


def test_credentials_in_a_url_stay_out_of_the_records(http: RangeServer, tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text(http.url("missing.safetensors").replace("http://", "http://user:s3cr3t@") + "\n")
    out = tmp_path / "out.ndjson"
    res = _batch("scan", "--from-list", str(listing), "--ndjson", str(out))
    assert res.exit_code == 2 and "s3cr3t" not in out.read_text() + res.output
    assert "error" in _records(out)[0]
