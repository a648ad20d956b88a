"""Checkpoints behind URLs, against real servers on 127.0.0.1: metadata by a handful of range requests,
values streamed, the Hugging Face cache, hostile servers ending in one line and exit 2."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from statecli.cli import app
from statecli.io import source
from statecli.load import load_checkpoint

from .server import GIB, RangeServer
from .server import sparse_safetensors as _sparse_safetensors

runner = CliRunner()



def _sparse_pt(path: Path) -> None:
    """A 1 GiB torch.save zip of three tensors, storages left as holes (torch's own skip_data)."""
    from torch.serialization import skip_data

    with skip_data():
        torch.save({f"layer{i}.weight": torch.empty(GIB // 12) for i in range(3)}, path)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"enc.weight": torch.randn(64, 32, generator=g), "enc.bias": torch.randn(64, generator=g),
            "head.weight": torch.randn(300, 64, generator=g), "steps": torch.tensor([3, 4], dtype=torch.int64)}


def _names(path: str) -> list[tuple[str, str, tuple[int, ...]]]:
    ck = load_checkpoint(path)
    return sorted((e.name, e.tensor.dtype, e.tensor.shape) for e in ck.entries if e.tensor is not None)


def _invoke(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# -- URL forms and credentials ---------------------------------------------------------------------

def test_url_forms_and_credentials() -> None:
    assert source.is_remote("s3://b/k.pt") and source.is_remote("HTTPS://h/x") and source.is_remote("hf://o/r/m.bin")
    assert not source.is_remote("model.pt") and not source.is_remote("org/repo") and not source.is_remote("file:///x")
    assert source.display_name("https://user:pw@host:8/a/b.pt?token=SECRET#f") == "https://host:8/a/b.pt"
    assert source.redact("bad: s3://k:SECRET@b/x.pt?sig=SECRET, again") == "bad: s3://b/x.pt, again"
    name = source.register("https://u:SECRET@h/x.pt?X-Amz-Signature=SECRET")
    assert "SECRET" not in name and source._real(name).endswith("SECRET")


# -- metadata by range requests --------------------------------------------------------------------

@pytest.mark.parametrize("maker,name", [(_sparse_safetensors, "big.safetensors"), (_sparse_pt, "big.pt")])
def test_inspect_1gib_file_reads_under_1mib_in_6_requests(http: RangeServer, http_root: Path, maker, name: str) -> None:
    path = http_root / name
    if not path.exists():
        maker(path)
    assert path.stat().st_size >= GIB
    code, out = _invoke(["inspect", http.url(name), "--format", "json"])
    assert code == 0, out
    assert len(http.log.requests) <= 6, http.log.requests
    assert http.log.bytes_sent < 1 << 20
    assert source.STATS.bytes < 1 << 20 and source.STATS.requests == len(http.log.requests)
    listed = sorted(e["name"] for e in json.loads(out)["entries"])
    assert listed == [n for n, _, _ in _names(str(path))]


def test_sharded_headers_fetched_concurrently(http: RangeServer, http_root: Path) -> None:
    folder = http_root / "sharded15"
    if not folder.exists():
        folder.mkdir()
        wmap = {}
        for i in range(15):
            shard = f"model-{i + 1:05d}-of-00015.safetensors"
            save_file({f"layers.{i}.weight": torch.full((8, 4), float(i))}, folder / shard)
            wmap[f"layers.{i}.weight"] = shard
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    http.behaviour.latency = 0.2
    t0 = time.perf_counter()
    remote = _names(http.url("sharded15/model.safetensors.index.json"))
    elapsed = time.perf_counter() - t0
    assert remote == _names(str(folder))
    assert http.log.max_in_flight >= 8, "shard headers were not fetched at once"
    assert elapsed < 15 * 2 * 0.2, elapsed  # sequential would be 15 x (HEAD + GET) x latency
    assert len(http.log.requests) <= 2 + 2 * 15


def test_legacy_and_values_over_http(http: RangeServer, http_root: Path) -> None:
    torch.save(_state(), http_root / "legacy.pt", _use_new_zipfile_serialization=False)
    save_file(_state(), http_root / "a.safetensors")
    assert _names(http.url("legacy.pt")) == _names(str(http_root / "legacy.pt"))
    code, out = _invoke(["diff", http.url("legacy.pt"), http.url("a.safetensors")])
    assert code == 0, out


# -- the done-when cases ---------------------------------------------------------------------------

def test_inspect_s3_model_pt(s3, tmp_path: Path) -> None:
    import fsspec

    torch.save(_state(), tmp_path / "model.pt")
    s3.put(str(tmp_path / "model.pt"), "ckpt/model.pt")
    fsspec.filesystem("s3").invalidate_cache()
    code, out = _invoke(["inspect", "s3://ckpt/model.pt", "--format", "json"])
    assert code == 0, out
    assert source.STATS.requests <= 6 and source.STATS.bytes < 1 << 20
    code, local = _invoke(["inspect", str(tmp_path / "model.pt"), "--format", "json"])
    assert json.loads(out)["entries"] == json.loads(local)["entries"]
    assert "testing-secret-key" not in out
    code, out = _invoke(["inspect", "--stats", "s3://ckpt/model.pt", "--format", "json"])
    assert code == 0 and json.loads(out)["entries"] == json.loads(_invoke(
        ["inspect", "--stats", str(tmp_path / "model.pt"), "--format", "json"])[1])["entries"]
    code, out = _invoke(["inspect", "s3://ckpt/missing.pt"])
    assert code == 2 and "not found" in out and len(out.strip().splitlines()) == 1


def test_s3_folder_listing_finds_the_index(s3, tmp_path: Path) -> None:
    import fsspec

    save_file({"a": torch.ones(3)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": torch.zeros(2)}, tmp_path / "model-00002-of-00002.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    for p in tmp_path.iterdir():
        s3.put(str(p), f"ckpt/sharded/{p.name}")
    fsspec.filesystem("s3").invalidate_cache()
    assert [n for n, _, _ in _names("s3://ckpt/sharded")] == ["a", "b"]


def _fake_hf_cache(root: Path, repo: str, files: dict[str, Path], rev: str = "main") -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / commit
    (base / "refs").mkdir(parents=True)
    (base / "refs" / rev).write_text(commit)
    snap.mkdir(parents=True)
    for name, src in files.items():
        blob = base / "blobs" / f"blob-{name}"
        blob.parent.mkdir(exist_ok=True)
        shutil.copy(src, blob)
        os.symlink(os.path.relpath(blob, snap), snap / name)


def test_diff_hf_cache_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_file(_state(), tmp_path / "local.safetensors")
    changed = _state()
    changed["enc.bias"] = changed["enc.bias"] + 1
    save_file(changed, tmp_path / "changed.safetensors")
    cache = tmp_path / "hub"
    _fake_hf_cache(cache, "acme/tiny", {"model.safetensors": tmp_path / "local.safetensors"})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code, out = _invoke(["diff", "acme/tiny", "local.safetensors"])
    assert code == 0, out
    code, out = _invoke(["diff", "acme/tiny@main", "changed.safetensors", "--format", "json"])
    assert code == 1, out
    assert "snapshots" in json.loads(out)["a"]["path"] if isinstance(json.loads(out).get("a"), dict) else True
    code, out = _invoke(["inspect", "acme/absent"])
    assert code == 2 and "no such file" in out


def test_cast_http_to_local_output(http: RangeServer, http_root: Path, tmp_path: Path) -> None:
    save_file(_state(), http_root / "m.safetensors")
    code, out = _invoke(["cast", http.url("m.safetensors"), "--dtype", "half", "-o", str(tmp_path / "out.safetensors")])
    assert code == 0, out
    code, out = _invoke(["cast", str(http_root / "m.safetensors"), "--dtype", "half", "-o", str(tmp_path / "ref.safetensors")])
    got, ref = load_file(tmp_path / "out.safetensors"), load_file(tmp_path / "ref.safetensors")
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    assert got["enc.weight"].dtype == torch.float16 and got["steps"].dtype == torch.int64


def test_value_commands_stream_ranges(http: RangeServer, http_root: Path, tmp_path: Path) -> None:
    big = {"w": torch.randn(3_000_000), "v": torch.arange(10, dtype=torch.float32)}  # 12 MiB: several ranges
    save_file(big, http_root / "v1.safetensors")
    big2 = dict(big)
    big2["w"] = big["w"].clone()
    big2["w"][123_456] += 1
    big2["v"] = big["v"].clone()
    big2["v"][3] = float("nan")
    save_file(big2, http_root / "v2.safetensors")
    remote = _invoke(["diff", http.url("v1.safetensors"), http.url("v2.safetensors"), "--format", "json"])
    local = _invoke(["diff", str(http_root / "v1.safetensors"), str(http_root / "v2.safetensors"), "--format", "json"])
    assert remote[0] == local[0] == 1
    assert json.loads(remote[1])["keys"] == json.loads(local[1])["keys"]
    assert max(int(r[2].split("-")[1]) - int(r[2].split("=")[1].split("-")[0]) + 1
               for r in http.log.requests if r[2]) <= source.MAX_RANGE
    code, out = _invoke(["check", "--no-nan", http.url("v2.safetensors")])
    assert code == 1, out
    code, out = _invoke(["convert", http.url("v1.safetensors"), "-o", str(tmp_path / "v1.pt")])
    assert code == 0, out
    assert torch.equal(torch.load(tmp_path / "v1.pt", weights_only=True)["w"], big["w"])


# -- failures: one line, exit 2, within seconds ----------------------------------------------------

def _one_line_error(args: list[str], budget: float = 10.0) -> str:
    t0 = time.perf_counter()
    code, out = _invoke(args)
    assert time.perf_counter() - t0 < budget
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1, out
    return out


@pytest.mark.parametrize("setting,expect", [
    ({"ignore_ranges": True}, "ignored the Range request"),
    ({"truncate": 1000}, "failed"),
    ({"extra_length": 4096}, ""),
    ({"redirect_loop": True}, "failed"),
    ({"status": 403}, "access denied (403)"),
    ({"status": 404}, "not found (404)"),
    ({"status": 500}, "after 3 attempts"),
])
def test_hostile_server(http: RangeServer, http_root: Path, setting: dict[str, object], expect: str) -> None:
    path = http_root / "hostile.safetensors"
    if not path.exists():
        _sparse_safetensors(path)
    for k, v in setting.items():
        setattr(http.behaviour, k, v)
    url = http.url("hostile.safetensors").replace("http://", "http://user:SECRET@") + "?token=SECRET"
    out = _one_line_error(["inspect", url])
    assert expect in out and "SECRET" not in out
    assert http.log.bytes_sent < 64 << 20, "a hostile answer was read whole"


def test_header_length_2_63(http: RangeServer, http_root: Path) -> None:
    with open(http_root / "huge-header.safetensors", "wb") as f:
        f.write(struct.pack("<Q", 1 << 63) + b'{"a":1}' + b" " * 1024)
    out = _one_line_error(["inspect", http.url("huge-header.safetensors")])
    assert "not a checkpoint" in out or "cap" in out


def test_http_output_refused(http: RangeServer, http_root: Path) -> None:
    # URL outputs are uploaded (tests/remote/test_remote_output.py); http(s):// is read-only
    save_file(_state(), http_root / "o.safetensors")
    out = _one_line_error(["cast", http.url("o.safetensors"), "--dtype", "half", "-o", http.url("out.safetensors")])
    assert "read-only" in out and not (http_root / "out.safetensors").exists()


@pytest.mark.parametrize("url", ["gs://bucket/model.pt", "az://container/model.pt"])
def test_missing_backend_names_the_extra(url: str) -> None:
    import importlib.util

    if importlib.util.find_spec("gcsfs" if url.startswith("gs") else "adlfs"):
        pytest.skip("backend installed")
    out = _one_line_error(["inspect", url])
    assert "torch-statecli[remote]" in out


def test_scan_and_check_never_print_credentials(http: RangeServer, http_root: Path, tmp_path: Path) -> None:
    torch.save(_state(), http_root / "cred.pt")
    url = http.url("cred.pt").replace("http://", "http://alice:SECRETPW@") + "?token=SECRETTOKEN"
    junit = tmp_path / "j.xml"
    for args in (["scan", url], ["scan", url, "-f", "json"], ["check", url, "--no-nan", "-f", "json", "--junit", str(junit)],
                 ["check", url, "--github"], ["check", url.replace("cred.pt", "missing.pt"), "--github"]):
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1, 2), (args, result.output)
        assert "SECRET" not in result.stdout + result.stderr, args
    assert "SECRET" not in junit.read_text()


@pytest.mark.parametrize("listing", [True, False])
def test_http_folder_says_http_has_no_folders(http: RangeServer, http_root: Path, listing: bool) -> None:
    """A folder URL (issue 21): a server's listing page, or any URL ending in '/', is named for what it is,
    with the file to pass instead; nothing is downloaded."""
    folder = http_root / "folder16"
    folder.mkdir(exist_ok=True)
    save_file({"w": torch.ones(4)}, folder / "model.safetensors")
    http.behaviour.list_folders = listing
    for url in (http.url("folder16/"), http.url("folder16")) if listing else (http.url("folder16/"),):
        out = _one_line_error(["inspect", url])
        assert "HTTP has no folders" in out and "*.index.json" in out and "ignored the Range" not in out, out
        assert "folder16/model.safetensors.index.json" in out
    assert http.log.bytes_sent < 1 << 16
