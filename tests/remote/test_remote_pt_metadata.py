"""Remote torch zips in a handful of requests (issue 21): metadata (inspect/size/diff) reads the end record,
the central directory and data.pkl only; the local headers it skipped are checked before values are read
and by `scan`, which fetches them concurrently; -v names what was skipped. Requests are counted on a real
Range server on 127.0.0.1."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

from .server import GIB, RangeServer

runner = CliRunner()
TENSORS = 257


def _big_pt(path: Path, seed: int = 0) -> None:
    """A 1 GiB torch.save zip of 257 tensors, storages left as holes (torch's own skip_data)."""
    from torch.serialization import skip_data

    if path.exists():
        return
    with skip_data():
        torch.save({f"layers.{i}.weight": torch.empty(GIB // 4 // TENSORS + seed) for i in range(TENSORS)}, path)


def _run(args: list[str]) -> tuple[int, str, str]:
    result = runner.invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", [["inspect", "-f", "json"], ["size", "-f", "json"]])
def test_metadata_of_a_1gib_pt_takes_6_requests(http: RangeServer, http_root: Path, command: list[str]) -> None:
    _big_pt(http_root / "big257.pt")
    assert (http_root / "big257.pt").stat().st_size >= GIB
    code, out, err = _run([command[0], http.url("big257.pt"), *command[1:]])
    assert code == 0, err
    assert len(http.log.requests) <= 6, http.log.requests
    assert http.log.bytes_sent < 1 << 20
    data = json.loads(out)
    assert (len(data["entries"]) if "entries" in data else data["tensors"]) == TENSORS


def test_diff_metadata_of_two_remote_pts(http: RangeServer, http_root: Path) -> None:
    _big_pt(http_root / "big257.pt")
    _big_pt(http_root / "big257b.pt", seed=1)
    code, out, err = _run(["diff", http.url("big257.pt"), http.url("big257b.pt"), "--no-values", "-f", "json"])
    assert code == 1, err  # every shape differs
    assert len(http.log.requests) <= 12 and http.log.bytes_sent < 2 << 20, http.log.requests


def test_verbose_names_the_skipped_checks(http: RangeServer, http_root: Path) -> None:
    _big_pt(http_root / "big257.pt")
    code, _, err = _run(["inspect", http.url("big257.pt"), "-v", "-q"])
    assert code == 0 and "not checked yet: zip local headers match the central directory" in err
    assert "every byte of the archive belongs to a member" in err


def _tampered(path: Path) -> None:
    """A small zip whose local header of data/0 names data/9 (the central directory says data/0): the
    container disagrees with itself, as a payload hidden for one parser would."""
    torch.save({"a": torch.arange(4.0), "b": torch.ones(3)}, path)
    raw = bytearray(path.read_bytes())
    at = 0
    while (at := raw.find(b"PK\x03\x04", at + 1)) >= 0:
        n = struct.unpack_from("<H", raw, at + 26)[0]
        if raw[at + 30:at + 30 + n].endswith(b"/data/0"):
            raw[at + 30 + n - 1] = ord("9")
            break
    path.write_bytes(bytes(raw))


def test_local_header_is_checked_before_values(http: RangeServer, http_root: Path, tmp_path: Path) -> None:
    _tampered(http_root / "tampered.pt")
    url = http.url("tampered.pt")
    code, _, err = _run(["inspect", url])  # metadata: the skipped check is not done here
    assert code == 0, err
    for args in (["show", url, "a"], ["inspect", url, "--stats"], ["cast", url, "--dtype", "half", "-o",
                                                                   str(tmp_path / "o.pt")]):
        code, out, err = _run(args)
        assert code == 2 and "does not match the central directory" in err, (args, err)
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.pt").exists()
    good = http_root / "good.pt"
    torch.save({"a": torch.arange(4.0)}, good)
    code, out, err = _run(["show", http.url("good.pt"), "a", "-f", "json"])
    assert code == 0 and json.loads(out)["first"] == [0.0, 1.0, 2.0, 3.0], err


def test_scan_reads_every_local_header_concurrently(http: RangeServer, http_root: Path) -> None:
    _big_pt(http_root / "big257.pt")
    http.behaviour.latency = 0.02  # long enough that reads overlap
    code, out, err = _run(["scan", http.url("big257.pt"), "-f", "json"])
    assert code == 0, err
    heads = [r for r in http.log.requests if r[0] == "GET"]
    assert len(heads) >= TENSORS  # every member's local header was read
    # statecli keeps <= 8 header reads in flight (the server counts a request until its answer starts)
    assert 2 <= http.log.max_in_flight <= 8
    _tampered(http_root / "tampered.pt")
    code, out, err = _run(["scan", http.url("tampered.pt"), "-f", "json"])
    assert code == 3 and "local header names" in out
