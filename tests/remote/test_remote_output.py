"""Outputs at a URL, against moto's S3 server on 127.0.0.1: written and verified locally, then uploaded;
any failure (a --strict refusal, a failed verification, a part lost mid multipart upload) leaves no
object and no pending upload, and credentials are never printed."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.cli import app
from statecli.errors import BadInput
from statecli.io import failures, source
from statecli.rewrite import upload

runner = CliRunner()
SECRET = "testing-secret-key"  # the moto fixture's AWS_SECRET_ACCESS_KEY


def _invoke(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _state(big: float = 1.0, rows: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"enc.weight": torch.randn(rows, 32, generator=g) * big, "enc.bias": torch.randn(64, generator=g),
            "steps": torch.tensor([3, 4], dtype=torch.int64)}


def _objects(s3: Any) -> list[str]:
    s3.invalidate_cache()
    return sorted(s3.find("ckpt"))


def _pending(s3: Any) -> list[dict[str, Any]]:
    return list(s3.call_s3("list_multipart_uploads", Bucket="ckpt").get("Uploads", []))


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's folder for this test alone (parallel workers write their own temps elsewhere)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_cast_to_s3_equals_local(s3: Any, tmp_path: Path, temp_root: Path) -> None:
    save_file(_state(), tmp_path / "in.safetensors")
    result = runner.invoke(app, ["cast", str(tmp_path / "in.safetensors"), "--dtype", "half", "-o",
                                 "s3://ckpt/out.safetensors", "--format", "json"])
    assert result.exit_code == 0, result.output
    # stdout holds the JSON only (notes go to stderr); neither stream shows the secret
    assert json.loads(result.stdout)["output"] == "s3://ckpt/out.safetensors" and SECRET not in result.output
    code, local = _invoke(["cast", str(tmp_path / "in.safetensors"), "--dtype", "half", "-o",
                           str(tmp_path / "out.safetensors")])
    assert code == 0, local
    assert s3.cat_file("ckpt/out.safetensors") == (tmp_path / "out.safetensors").read_bytes()
    source.clear_cache()
    code, remote = _invoke(["inspect", "s3://ckpt/out.safetensors", "--format", "json"])
    code2, here = _invoke(["inspect", str(tmp_path / "out.safetensors"), "--format", "json"])
    assert code == code2 == 0
    assert json.loads(remote)["entries"] == json.loads(here)["entries"]
    assert os.listdir(temp_root) == [], "the local temp folder was left behind"


def _record_uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The remote names uploaded, in order (the real upload still happens)."""
    order: list[str] = []
    real = upload._put

    def put(fs: Any, local: str, remote: str) -> None:
        order.append(remote)
        real(fs, local, remote)

    monkeypatch.setattr(upload, "_put", put)
    return order


def test_sharded_folder_uploaded_index_last(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_file(_state(rows=4096), tmp_path / "in.safetensors")
    order = _record_uploads(monkeypatch)
    code, out = _invoke(["convert", str(tmp_path / "in.safetensors"), "--max-shard-size", "200KB", "-o", "s3://ckpt/sharded"])
    assert code == 0, out
    assert len(order) >= 3 and order[-1].endswith(".index.json")
    assert all(not o.endswith(".index.json") for o in order[:-1])
    source.clear_cache()
    code, out = _invoke(["diff", str(tmp_path / "in.safetensors"), "s3://ckpt/sharded"])
    assert code == 0, out
    # a folder output never lands over a non-empty remote folder
    code, out = _invoke(["convert", str(tmp_path / "in.safetensors"), "--max-shard-size", "200KB", "-o", "s3://ckpt/sharded"])
    assert code == 2 and "not an empty folder" in out


def test_strict_refusal_leaves_nothing(s3: Any, tmp_path: Path, temp_root: Path) -> None:
    save_file(_state(big=1e6), tmp_path / "in.safetensors")
    code, out = _invoke(["cast", str(tmp_path / "in.safetensors"), "--dtype", "half", "--strict", "-o",
                         "s3://ckpt/out.safetensors"])
    assert code == 2 and "--strict" in out
    assert _objects(s3) == [] and os.listdir(temp_root) == []


def test_verification_failure_leaves_nothing(s3: Any, tmp_path: Path, temp_root: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from statecli.rewrite import run as run_mod

    def bad(plan: Any, written: str, fmt: str, shown_as: str) -> Any:
        raise BadInput(shown_as, "verification failed: 'enc.weight' is not as planned in the written file; nothing was kept")

    monkeypatch.setattr(run_mod, "verify_file", bad)
    save_file(_state(), tmp_path / "in.safetensors")
    code, out = _invoke(["cast", str(tmp_path / "in.safetensors"), "--dtype", "half", "-o", "s3://ckpt/out.safetensors"])
    assert code == 2 and "verification failed" in out
    assert out.startswith("s3://ckpt/out.safetensors") or "s3://ckpt/out.safetensors:" in out, out
    assert str(temp_root) not in out
    assert _objects(s3) == [] and os.listdir(temp_root) == []


def test_failed_multipart_upload_is_aborted(s3: Any, tmp_path: Path, temp_root: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A part lost mid upload: s3fs aborts the multipart upload, no object appears, none is pending."""
    import s3fs

    save_file({"w": torch.randn(6 << 20)}, tmp_path / "in.safetensors")  # 24 MiB -> 12 MiB of fp16
    monkeypatch.setattr(upload, "PART_SIZE", 5 << 20)
    real = s3fs.S3FileSystem._call_s3
    calls: list[str] = []

    async def flaky(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        if method == "upload_part" and calls.count("upload_part") >= 2:
            raise ConnectionResetError("the network went away")
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", flaky)
    monkeypatch.setattr(failures, "RETRIES", 1)
    code, out = _invoke(["cast", str(tmp_path / "in.safetensors"), "--dtype", "half", "-o", "s3://ckpt/big.safetensors"])
    assert code == 2 and "upload" in out and "nothing was left" in out, out
    assert "create_multipart_upload" in calls
    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", real)
    assert _objects(s3) == [] and _pending(s3) == [] and os.listdir(temp_root) == []


def test_completed_multipart_upload(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_file({"w": torch.randn(6 << 20)}, tmp_path / "in.safetensors")
    monkeypatch.setattr(upload, "PART_SIZE", 5 << 20)
    code, out = _invoke(["cast", str(tmp_path / "in.safetensors"), "--dtype", "half", "-o", "s3://ckpt/big.safetensors"])
    assert code == 0, out
    _invoke(["cast", str(tmp_path / "in.safetensors"), "--dtype", "half", "-o", str(tmp_path / "big.safetensors")])
    assert s3.cat_file("ckpt/big.safetensors") == (tmp_path / "big.safetensors").read_bytes()
    assert _pending(s3) == []


def test_failed_replace_keeps_the_older_object(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_file(_state(), tmp_path / "in.safetensors")
    assert _invoke(["cast", str(tmp_path / "in.safetensors"), "--dtype", "half", "-o", "s3://ckpt/out.safetensors"])[0] == 0
    old = s3.cat_file("ckpt/out.safetensors")

    def broken(fs: Any, local: str, remote: str) -> None:
        raise ConnectionResetError("the network went away")

    monkeypatch.setattr(upload, "_put", broken)
    monkeypatch.setattr(failures, "RETRIES", 1)
    code, out = _invoke(["cast", str(tmp_path / "in.safetensors"), "--dtype", "bfloat16", "-o", "s3://ckpt/out.safetensors"])
    assert code == 2, out
    assert s3.cat_file("ckpt/out.safetensors") == old


def test_missing_bucket_and_credentials_never_shown(s3: Any, tmp_path: Path) -> None:
    save_file(_state(), tmp_path / "in.safetensors")
    code, out = _invoke(["cast", str(tmp_path / "in.safetensors"), "--dtype", "half", "-o",
                         "s3://no-such-bucket/out.safetensors?X-Amz-Signature=SECRET"])
    assert code == 2 and "not found" in out and len(out.strip().splitlines()) == 1, out
    assert SECRET not in out and "SECRET" not in out and "testing" not in out


def test_s3_to_s3_and_the_input_refused(s3: Any, tmp_path: Path) -> None:
    save_file(_state(), tmp_path / "in.safetensors")
    s3.put(str(tmp_path / "in.safetensors"), "ckpt/in.safetensors")
    source.clear_cache()
    code, out = _invoke(["cast", "s3://ckpt/in.safetensors", "--dtype", "half", "-o", "s3://ckpt/in.safetensors"])
    assert code == 2 and "is the input" in out
    code, out = _invoke(["cast", "s3://ckpt/in.safetensors", "--dtype", "half", "-o", "s3://ckpt/half.safetensors"])
    assert code == 0, out
    assert sorted(_objects(s3)) == ["ckpt/half.safetensors", "ckpt/in.safetensors"]


def test_dcp_folder_metadata_last(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_file(_state(), tmp_path / "in.safetensors")
    order = _record_uploads(monkeypatch)
    code, out = _invoke(["convert", str(tmp_path / "in.safetensors"), "--to", "dcp", "-o", "s3://ckpt/dcp"])
    assert code == 0, out
    assert order[-1] == "ckpt/dcp/.metadata" and len(order) >= 2
    s3.get("ckpt/dcp", str(tmp_path / "back"), recursive=True)  # remote DCP values are not read: compare a copy
    code, out = _invoke(["diff", str(tmp_path / "in.safetensors"), str(tmp_path / "back")])
    assert code == 0, out


def test_in_place_on_s3(s3: Any, tmp_path: Path) -> None:
    """--in-place on a URL: every value is read (and the output verified) before the upload replaces it."""
    save_file(_state(), tmp_path / "in.safetensors")
    s3.put(str(tmp_path / "in.safetensors"), "ckpt/m.safetensors")
    source.clear_cache()
    code, out = _invoke(["cast", "s3://ckpt/m.safetensors", "--dtype", "half", "--in-place"])
    assert code == 0, out
    source.clear_cache()
    code, out = _invoke(["inspect", "s3://ckpt/m.safetensors", "--format", "json"])
    assert code == 0 and {e["dtype"] for e in json.loads(out)["entries"]} == {"float16", "int64"}
