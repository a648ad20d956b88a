"""A format is a plug-in: reading and scanning both go through the one registry of FormatHandlers, the
handlers claim files by their bytes (or their layout), and callers decide on types (Format members,
NotACheckpoint / NotFound), never on a format's name or an error's wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import statecli.formats.registry as registry
from statecli.analyses.scan import scan
from statecli.errors import BadInput, ExitCode, NotACheckpoint, NotFound
from statecli.formats import RawCheckpoint, detect_format, handler_for, read_raw
from statecli.formats.handler import BaseHandler
from statecli.pickle.pickles import Findings
from statecli.state import Format


class _Toy(BaseHandler):
    """A made-up format, known by its magic bytes: what adding GGUF or ONNX looks like."""

    format = Format.NUMPY_ARRAY  # any member: the test checks the handler is the one asked
    calls: list[str]

    def __init__(self) -> None:
        self.calls = []

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return head.startswith(b"TOY1")

    def read(self, source: str) -> RawCheckpoint:
        self.calls.append("read")
        return RawCheckpoint(path=source, format=self.format, root={})

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        self.calls.append("scan")
        findings.problems.append("toy finding")
        return self.format


def test_one_registry_entry_plugs_a_format_into_read_and_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "x.toy"
    f.write_bytes(b"TOY1" + b"\0" * 64)
    with pytest.raises(NotACheckpoint):  # unknown before it is registered
        read_raw(str(f))
    toy = _Toy()
    monkeypatch.setattr(registry, "REGISTRY", (toy, *registry.REGISTRY))
    assert read_raw(str(f)).format is Format.NUMPY_ARRAY
    r = scan(str(f))
    assert toy.calls == ["read", "scan"]
    assert r.problems == ("toy finding",) and r.exit_code == ExitCode.UNSAFE


def test_handlers_claim_their_files_by_bytes_not_names(tmp_path: Path) -> None:
    sd = {"w": torch.ones(2, 3)}
    pt, st = tmp_path / "a.safetensors", tmp_path / "b.pt"  # names that lie
    torch.save(sd, pt)
    save_file(sd, str(st))
    assert handler_for(str(pt)).format is Format.TORCH_ZIP
    assert handler_for(str(st)).format is Format.SAFETENSORS
    assert read_raw(str(pt)).format is Format.TORCH_ZIP and read_raw(str(st)).format is Format.SAFETENSORS


def test_every_format_has_one_handler_and_json_keeps_its_name(tmp_path: Path) -> None:
    formats = [h.format for h in registry.REGISTRY]
    assert len(formats) == len(set(formats))
    f = tmp_path / "m.pt"
    torch.save({"w": torch.ones(1)}, f)
    r = scan(str(f))
    assert r.format is Format.TORCH_ZIP and json.loads(json.dumps(r.to_dict()))["format"] == "torch zip"


def test_a_folder_and_an_index_are_claimed_before_a_byte_is_read(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    assert handler_for(str(index)).format is Format.SHARDED
    # a shard read as a file is never another index: its JSON bytes are not a checkpoint
    with pytest.raises(NotACheckpoint):
        handler_for(str(index), allow_sharded=False)
    dcp = tmp_path / "dcp"
    dcp.mkdir()
    (dcp / ".metadata").write_bytes(b"")
    assert handler_for(str(dcp)).format is Format.DCP


@pytest.mark.parametrize("head", [b"\x89PNG\r\n\x1a\n" + b"\0" * 32, b"\x7fELF\x02\x01\x01", b'{"a": 1}', b"hello world\n"])
def test_not_a_checkpoint_is_a_type(tmp_path: Path, head: bytes) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(head)
    with pytest.raises(NotACheckpoint) as exc:
        read_raw(str(f))
    assert isinstance(exc.value, BadInput) and exc.value.exit_code == ExitCode.BAD_INPUT


def test_detect_format_names_a_format_or_refuses_by_type() -> None:
    assert detect_format("x", b"PK\x03\x04" + b"\0" * 30) is Format.TORCH_ZIP
    assert detect_format("x", b"\x80\x02" + b"\0" * 30) is Format.TORCH_LEGACY  # any pickle stream
    with pytest.raises(NotACheckpoint):
        detect_format("x", b"{\"weight_map\": {}}")  # JSON: no opcode, no magic


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as exc:
        read_raw(str(tmp_path / "nope.pt"))
    assert exc.value.exit_code == ExitCode.BAD_INPUT
    r = scan(str(tmp_path / "nope.pt"))
    assert r.format is None and r.errors and r.to_dict()["format"] == "" and r.exit_code == ExitCode.BAD_INPUT


def test_a_zip_that_is_not_a_checkpoint_still_has_its_npy_payload_refused(tmp_path: Path) -> None:
    """The zip handler tells 'no data.pkl' (NotACheckpoint) from a broken archive by type: an .npz
    with an object array is scanned for a payload, and its format is named."""
    import numpy as np

    f = tmp_path / "a.npz"
    np.savez(f, a=np.array([1, "x"], dtype=object))
    r = scan(str(f))
    assert r.format is Format.NUMPY_NPZ and r.pickles >= 1


def test_an_unknown_file_is_told_every_format_statecli_reads() -> None:
    from statecli.formats import sniff
    from statecli.formats.registry import REGISTRY

    said = sniff(b"\x07\xfe" + bytes(range(200)))
    assert said.startswith("unknown format") and all(str(h.format) in said for h in REGISTRY)
