"""Hostile and broken inputs: every one is refused with one line naming the file (exit 2 for bad
input, 3 for unsafe content), nothing in a pickle ever runs, names cannot drive the terminal, and
the input file is never modified. Every fixture is built here, inside tmp_path."""

from __future__ import annotations

import argparse
import builtins
import hashlib
import importlib
import io
import json
import os
import pickle
import random
import runpy
import struct
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._utils
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.cli import app
from statecli.load import load_checkpoint
from statecli.state import Kind

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
NO_COLOR_ENV = {"FORCE_COLOR": None, "CLICOLOR_FORCE": None, "TTY_COMPATIBLE": None, "TTY_INTERACTIVE": None}


# -- helpers -------------------------------------------------------------------------------------

def _inspect(path: Path | str, *extra: str) -> Any:
    return runner.invoke(app, ["inspect", str(path), *extra], env=NO_COLOR_ENV)


def _assert_refused(result: Any, code: int, path: Path | str, *needles: str) -> str:
    """Exit `code`, exactly one line on stderr naming `path`, no traceback, nothing on stdout."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert str(path) in err, err
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _torch_members(obj: Any, **kw: Any) -> list[tuple[str, bytes]]:
    """The members of a real torch.save archive, in order (archive prefix 'archive/')."""
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _write_zip(path: Path, members: list[tuple[str, bytes]],
               compress: dict[str, int] | None = None) -> Path:
    compress = compress or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names; some tests want them
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for name, data in members:
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=compress.get(name, zipfile.ZIP_STORED))
    return path


def _replace(members: list[tuple[str, bytes]], suffix: str, data: bytes) -> list[tuple[str, bytes]]:
    hits = [n for n, _ in members if n.endswith(suffix)]
    assert len(hits) == 1, hits
    return [(n, data if n == hits[0] else d) for n, d in members]


def _zip_with_pickle(path: Path, pkl: bytes) -> Path:
    """A real torch.save archive of {'w': zeros(2)} with archive/data.pkl replaced, member order kept."""
    return _write_zip(path, _replace(_torch_members({"w": torch.zeros(2)}), "/data.pkl", pkl))


def _legacy_file(path: Path, obj_pickle: bytes, magic_pickle: bytes | None = None,
                 keys_pickle: bytes | None = None) -> Path:
    """A pre-1.6 torch.save file built from its five pickles (no storages)."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    parts = [
        magic_pickle if magic_pickle is not None else pickle.dumps(LEGACY_MAGIC, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps(sys_info, protocol=2),
        obj_pickle,
        keys_pickle if keys_pickle is not None else pickle.dumps([], protocol=2),
    ]
    path.write_bytes(b"".join(parts))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _safetensors(path: Path, header: Any, data: bytes = b"", raw_header: bytes | None = None,
                 length: int | None = None) -> Path:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


# -- 1. broken and malformed inputs: exit 2 --------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "missing.pt"
    _assert_refused(_inspect(p), 2, p, "no such file")


def test_directory_without_checkpoint(tmp_path: Path) -> None:
    d = tmp_path / "folder"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    _assert_refused(_inspect(d), 2, d, "no checkpoint")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    _assert_refused(_inspect(p), 2, p, "empty file")


def test_random_bytes(tmp_path: Path) -> None:
    p = tmp_path / "noise.pt"
    p.write_bytes(b"\x00NOISE" + random.Random(0).randbytes(4096))
    _assert_refused(_inspect(p), 2, p, "unknown format")


@pytest.mark.parametrize("cut", ["half", "100"])
def test_truncated_torch_zip(tmp_path: Path, cut: str) -> None:
    p = tmp_path / "model.pt"
    torch.save({"w": torch.randn(64, 64), "b": torch.randn(64)}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2] if cut == "half" else data[:100])
    _assert_refused(_inspect(p), 2, p)


@pytest.mark.parametrize("cut", ["half", "100", "minus4"])
def test_truncated_legacy(tmp_path: Path, cut: str) -> None:
    p = tmp_path / "legacy.pt"
    torch.save({"w": torch.randn(64, 64), "b": torch.randn(64)}, p, _use_new_zipfile_serialization=False)
    assert _inspect(p).exit_code == 0
    data = p.read_bytes()
    p.write_bytes({"half": data[: len(data) // 2], "100": data[:100], "minus4": data[:-4]}[cut])
    _assert_refused(_inspect(p), 2, p)


def test_truncated_safetensors_header(tmp_path: Path) -> None:
    p = tmp_path / "model.safetensors"
    save_file({"w": torch.randn(8, 8), "b": torch.randn(8)}, str(p))
    p.write_bytes(p.read_bytes()[:20])  # the header length says more than the file holds
    _assert_refused(_inspect(p), 2, p, "truncated")


def test_truncated_safetensors_data(tmp_path: Path) -> None:
    p = tmp_path / "model.safetensors"
    save_file({"w": torch.randn(8, 8), "b": torch.randn(8)}, str(p))
    p.write_bytes(p.read_bytes()[:-4])  # data shorter than the last offsets
    _assert_refused(_inspect(p), 2, p, "truncated")


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("not_json", {"header": None, "raw_header": b"{not json at all", "data": b"\0" * 8}),
        ("json_array", {"header": [1, 2, 3], "data": b"\0" * 8}),
        ("duplicate_key", {"header": None, "raw_header": (b'{"a": ' + json.dumps(F32_2).encode() + b', "a": '
                                                          + json.dumps(F32_2).encode() + b"}"), "data": b"\0" * 8}),
        ("unknown_dtype", {"header": {"a": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, "data": b"\0" * 8}),
        ("overlap", {"header": {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "data": b"\0" * 12}),
        ("gap", {"header": {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, "data": b"\0" * 20}),
        ("shape_vs_span", {"header": {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, "data": b"\0" * 8}),
        ("negative_offsets", {"header": {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "data": b"\0" * 8}),
        ("huge_length", {"header": {"a": F32_2}, "data": b"\0" * 8, "length": 2**60}),
        ("length_over_cap", {"header": {"a": F32_2}, "data": b"\0" * 8, "length": 100_000_001}),
        ("trailing_bytes", {"header": {"a": F32_2}, "data": b"\0" * 12}),
    ],
)
def test_malformed_safetensors(tmp_path: Path, name: str, kwargs: dict[str, Any]) -> None:
    p = _safetensors(tmp_path / f"{name}.safetensors", **kwargs)
    _assert_refused(_inspect(p), 2, p)


def test_safetensors_control_is_accepted(tmp_path: Path) -> None:
    """The hand-built safetensors layout the malformed cases start from is itself valid."""
    p = _safetensors(tmp_path / "ok.safetensors", {"a": F32_2, "b": {"dtype": "F16", "shape": [2], "data_offsets": [8, 12]}},
                     b"\0" * 12)
    assert _inspect(p).exit_code == 0


def test_zip_duplicate_members(tmp_path: Path) -> None:
    members = _torch_members({"w": torch.zeros(2)})
    pkl = dict(members)["archive/data.pkl"]
    p = _write_zip(tmp_path / "dup.pt", [*members, ("archive/data.pkl", pkl)])
    # A parser-confusion trick, not a broken file: a finding (exit 3), as `scan` reports it.
    _assert_refused(_inspect(p), 3, p, "duplicate")


def _patch_flags(data: bytearray, bit: int) -> bytearray:
    """Set `bit` in the general-purpose flags of every local (PK34) and central (PK12) header."""
    n = 0
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = data.find(sig)
        while pos >= 0:
            (flags,) = struct.unpack_from("<H", data, pos + off)
            struct.pack_into("<H", data, pos + off, flags | bit)
            n += 1
            pos = data.find(sig, pos + 4)
    assert n >= 2
    return data


def test_zip_encrypted_member(tmp_path: Path) -> None:
    p = _write_zip(tmp_path / "enc.pt", _torch_members({"w": torch.zeros(2)}))
    p.write_bytes(bytes(_patch_flags(bytearray(p.read_bytes()), 0x1)))
    assert all(i.flag_bits & 1 for i in zipfile.ZipFile(p).infolist())
    _assert_refused(_inspect(p), 3, p, "encryption flag")


def test_zip_really_encrypted_is_unreadable_everywhere(tmp_path: Path) -> None:
    """Every member flagged and data.pkl's bytes no pickle (ZipCrypto's 12-byte header, then
    ciphertext): torch.load cannot read it either, so exit 2 from every command, one clear line."""
    members = [(n, bytes(range(7, 7 + 64)) if n.endswith("data.pkl") else d)
               for n, d in _torch_members({"w": torch.zeros(2)})]
    p = _write_zip(tmp_path / "enc.pt", members)
    p.write_bytes(bytes(_patch_flags(bytearray(p.read_bytes()), 0x1)))
    _assert_refused(_inspect(p), 2, p, "an encrypted zip archive")
    res = runner.invoke(app, ["scan", str(p)])
    assert res.exit_code == 2 and "an encrypted zip archive" in res.stdout, res.stdout
    res = runner.invoke(app, ["cast", str(p), "--dtype", "half", "-o", str(tmp_path / "out.pt")])
    assert res.exit_code == 2 and not (tmp_path / "out.pt").exists()


def test_zip_local_name_differs_from_central(tmp_path: Path) -> None:
    p = _write_zip(tmp_path / "names.pt", _torch_members({"w": torch.zeros(2)}))
    data = bytearray(p.read_bytes())
    local = data.find(b"PK\x03\x04")
    name_at = local + 30
    assert data[name_at:name_at + 16] == b"archive/data.pkl"
    data[name_at:name_at + 16] = b"archive/data.pkX"  # same length; the central directory keeps data.pkl
    p.write_bytes(bytes(data))
    _assert_refused(_inspect(p), 3, p, "central directory")


@pytest.mark.parametrize("nbytes", [4, 12, 0])
def test_zip_storage_size_disagrees_with_numel(tmp_path: Path, nbytes: int) -> None:
    members = _replace(_torch_members({"w": torch.zeros(2)}), "/data/0", b"\0" * nbytes)
    p = _write_zip(tmp_path / "size.pt", members)
    _assert_refused(_inspect(p), 2, p, "storage '0'")


def test_zip_without_data_pkl(tmp_path: Path) -> None:
    p = _write_zip(tmp_path / "notorch.pt", [("archive/readme.txt", b"hello"), ("archive/data/0", b"\0" * 8)])
    _assert_refused(_inspect(p), 2, p, "data.pkl")


def test_zip_members_not_under_one_folder(tmp_path: Path) -> None:
    p = _write_zip(tmp_path / "loose.pt", [("readme.txt", b"hello"), ("other/x", b"x")])
    _assert_refused(_inspect(p), 2, p)


def test_zip_storage_compressed(tmp_path: Path) -> None:
    members = _torch_members({"w": torch.zeros(64)})
    name = next(n for n, _ in members if n.endswith("/data/0"))
    p = _write_zip(tmp_path / "deflated.pt", members, {name: zipfile.ZIP_DEFLATED})
    assert zipfile.ZipFile(p).getinfo(name).compress_type == zipfile.ZIP_DEFLATED
    _assert_refused(_inspect(p), 2, p, "compressed")


def test_rebuilt_zip_control_is_accepted(tmp_path: Path) -> None:
    """The rebuild used by the zip tests yields a file statecli and torch both accept."""
    p = _write_zip(tmp_path / "ok.pt", _torch_members({"w": torch.arange(2.0)}))
    assert torch.load(p, weights_only=True)["w"].tolist() == [0.0, 1.0]
    result = _inspect(p, "--format", "json")
    assert result.exit_code == 0, result.output
    assert [e["name"] for e in json.loads(result.stdout)["entries"]] == ["w"]


class _StorageToken:
    """Stands for storage '0' when writing a data.pkl by hand."""


class _Reduce:
    """Pickles as `fn(*args)`. Never unpickled by these tests."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.fn, self.args)


def _tensor_pickle(offset: int, size: tuple[int, ...], stride: tuple[int, ...], numel: int = 2) -> bytes:
    """A data.pkl holding {'w': _rebuild_tensor_v2(storage '0' of `numel` floats, offset, size, stride)}."""

    class P(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, _StorageToken):
                return ("storage", torch.FloatStorage, "0", "cpu", numel)
            return None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"w": _Reduce(torch._utils._rebuild_tensor_v2,
                                          (_StorageToken(), offset, size, stride, False, OrderedDict()))})
    return buf.getvalue()


def test_handwritten_tensor_pickle_control(tmp_path: Path) -> None:
    p = _zip_with_pickle(tmp_path / "ok.pt", _tensor_pickle(0, (2,), (1,)))
    assert torch.load(p, weights_only=True)["w"].shape == (2,)
    assert _inspect(p).exit_code == 0


@pytest.mark.parametrize(
    "offset, size, stride, why",
    [
        (0, (5,), (1,), "reaches element 5"),  # size larger than the storage
        (1, (2,), (1,), "reaches element 3"),  # offset pushes the view past the end
        (0, (2,), (4,), "reaches element 5"),  # stride pushes the view past the end
        (0, (2, 2), (1, 1), "reaches element 3"),  # 2-d view ending past the storage
        (-1, (1,), (1,), "negative"),  # negative offset
        (0, (-2,), (1,), "negative"),  # negative size
        (0, (2,), (1, 1), "differ in length"),  # size/stride rank mismatch
    ],
)
def test_tensor_view_outside_storage(tmp_path: Path, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                                     why: str) -> None:
    p = _zip_with_pickle(tmp_path / "view.pt", _tensor_pickle(offset, size, stride))
    _assert_refused(_inspect(p), 2, p, why)


def _run_module(path: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statecli", "inspect", path], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    proc = _run_module(str(fifo))  # a hang raises TimeoutExpired
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(fifo) in proc.stderr and "Traceback" not in proc.stderr
    assert "regular file" in proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_refused(tmp_path: Path) -> None:
    proc = _run_module("/dev/zero")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "/dev/zero" in proc.stderr and "Traceback" not in proc.stderr


# -- 2. code-execution payloads: never run, exit 3 naming the global ------------------------------

def _op_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE (valid in protocols 2 and 4)


def _op_global(module: str, name: str, proto: int) -> bytes:
    if proto == 2:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL
    return _op_str(module) + _op_str(name) + b"\x93"  # STACK_GLOBAL


def _op_call(callee: bytes, *args: bytes) -> bytes:
    return callee + b"(" + b"".join(args) + b"tR"  # MARK args TUPLE REDUCE


def _hand_pickle(body: bytes, proto: int) -> bytes:
    return b"\x80" + bytes([proto]) + body + b"."


def _touch_code(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def _payloads(marker: Path) -> dict[str, tuple[Callable[[int], bytes], list[str]]]:
    """name -> (protocol -> pickle bytes, globals the refusal must name)."""
    touch = f"touch {marker}"
    code = _touch_code(marker)

    def via_reduce(fn: Callable[..., Any], *args: Any) -> Callable[[int], bytes]:
        return lambda proto: pickle.dumps(_Reduce(fn, args), protocol=proto)

    def hand(module: str, name: str, *args: str) -> Callable[[int], bytes]:
        return lambda proto: _hand_pickle(_op_call(_op_global(module, name, proto), *map(_op_str, args)), proto)

    def getattr_trick(proto: int) -> bytes:
        mod = _op_call(_op_global("importlib", "import_module", proto), _op_str("builtins"))
        ev = _op_call(_op_global("builtins", "getattr", proto), mod, _op_str("eval"))
        return _hand_pickle(ev + b"(" + _op_str(code) + b"tR", proto)

    def getattr_on_stub(proto: int) -> bytes:
        # getattr(<builtins.object>, '__subclasses__'): the attribute lookup alone is the danger.
        obj = _op_global("builtins", "object", proto)
        return _hand_pickle(_op_call(_op_global("builtins", "getattr", proto), obj, _op_str("__subclasses__")), proto)

    inner = pickle.dumps(_Reduce(os.system, (touch,)), protocol=2)
    return {
        "os.system": (hand("os", "system", touch), ["os.system"]),
        "posix.system": (via_reduce(os.system, touch), [f"{os.system.__module__}.system"]),
        "nt.system": (hand("nt", "system", touch), ["nt.system"]),
        "builtins.eval": (via_reduce(builtins.eval, code), ["builtins.eval"]),
        "builtins.exec": (via_reduce(builtins.exec, code), ["builtins.exec"]),
        "subprocess.Popen": (via_reduce(subprocess.Popen, ["touch", str(marker)]), ["subprocess.Popen"]),
        "runpy._run_code": (via_reduce(runpy._run_code, code, {}), ["runpy._run_code"]),
        "importlib.import_module": (via_reduce(importlib.import_module, "antigravity"), ["importlib.import_module"]),
        # _pickle.loads, or pickle.loads through _compat_pickle at protocol 2
        "pickle.loads": (via_reduce(pickle.loads, inner), ["pickle.loads"]),
        "getattr_trick": (getattr_trick, ["builtins.getattr", "importlib.import_module"]),
        "getattr_on_stub": (getattr_on_stub, ["builtins.getattr"]),
    }


PAYLOADS = list(_payloads(Path("/x")))


@pytest.mark.parametrize("proto", [2, 4])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_in_torch_zip(tmp_path: Path, payload: str, proto: int) -> None:
    marker = tmp_path / "MARKER"
    make, names = _payloads(marker)[payload]
    pkl = make(proto)
    assert (b"\x93" in pkl) == (proto == 4) and (b"\x80" + bytes([proto])) == pkl[:2]
    p = _zip_with_pickle(tmp_path / "evil.pt", pkl)
    err = _assert_refused(_inspect(p), 3, p, *names)
    assert "refus" in err
    assert not marker.exists()
    # The library API refuses it the same way.
    from statecli.errors import UnsafeContent

    with pytest.raises(UnsafeContent):
        load_checkpoint(str(p))
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("proto", [2, 4])
def test_payload_beside_real_tensor_via_torch_save(tmp_path: Path, proto: int, legacy: bool) -> None:
    """torch.save itself writes the payload next to a real tensor (zip and legacy formats)."""
    marker = tmp_path / "MARKER"
    obj = {"w": torch.zeros(2), "x": _Reduce(os.system, (f"touch {marker}",))}
    p = tmp_path / "evil.pt"
    torch.save(obj, p, pickle_protocol=proto, _use_new_zipfile_serialization=not legacy)
    result = _inspect(p)
    assert not marker.exists()
    # A legacy file written with pickle_protocol=4 starts with a FRAME before the magic number; it is
    # recognised through the restricted unpickler and refused like the others.
    _assert_refused(result, 3, p, f"{os.system.__module__}.system")


@pytest.mark.parametrize("proto", [2, 4])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_in_legacy_object_pickle(tmp_path: Path, payload: str, proto: int) -> None:
    marker = tmp_path / "MARKER"
    make, names = _payloads(marker)[payload]
    p = _legacy_file(tmp_path / "evil_legacy.pt", make(proto))
    _assert_refused(_inspect(p), 3, p, *names)
    assert not marker.exists()


def _magic_with_payload(marker: Path, proto: int) -> bytes:
    """The legacy magic-number pickle: still starts with (and returns) the magic number, but runs
    os.system on the way (PROTO 2, LONG1 magic, GLOBAL.. REDUCE, POP, STOP)."""
    body = _op_call(_op_global("os", "system", proto), _op_str(f"touch {marker}"))
    return b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little") + body + b"0."


def test_legacy_control_pickles_are_accepted(tmp_path: Path) -> None:
    """The hand-built legacy layout (no payload) is read, so refusals below are about the payload."""
    p = _legacy_file(tmp_path / "ok.pt", pickle.dumps({"epoch": 3}, protocol=2))
    result = _inspect(p, "--format", "json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("proto", [2, 4])
def test_payload_in_legacy_magic_pickle(tmp_path: Path, proto: int) -> None:
    marker = tmp_path / "MARKER"
    magic = _magic_with_payload(marker, proto)
    p = _legacy_file(tmp_path / "evil_magic.pt", pickle.dumps({"epoch": 3}, protocol=2), magic_pickle=magic)
    result = _inspect(p)
    assert not marker.exists()
    _assert_refused(result, 3, p, "os.system")


def test_payload_in_legacy_storage_key_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    keys = _hand_pickle(b"]" + _op_call(_op_global("os", "system", 2), _op_str(f"touch {marker}")) + b"0", 2)
    p = _legacy_file(tmp_path / "evil_keys.pt", pickle.dumps({"epoch": 3}, protocol=2), keys_pickle=keys)
    result = _inspect(p)
    assert not marker.exists()
    _assert_refused(result, 3, p, "os.system")


def test_payload_never_runs_on_any_command(tmp_path: Path) -> None:
    """Every read-only command that opens the file refuses it without running the payload."""
    marker = tmp_path / "MARKER"
    p = _zip_with_pickle(tmp_path / "evil.pt", pickle.dumps(_Reduce(os.system, (f"touch {marker}",)), protocol=2))
    for argv in (["inspect", str(p)], ["size", str(p)], ["inspect", str(p), "--stats"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 3, (argv, result.output)
        assert str(p) in result.stderr
    assert not marker.exists()


# -- 3. non-allowlisted but harmless globals, pickled modules ------------------------------------

def test_namespace_global_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    p = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(3), "args": argparse.Namespace(lr=0.1)}, p)
    result = _inspect(p)
    assert result.exit_code == 0, result.output
    assert "w" in result.stdout and "float32" in result.stdout
    assert "torch.load would need weights_only=False: argparse.Namespace" in result.output
    data = json.loads(_inspect(p, "--format", "json").stdout)
    assert data["unsafe_globals"] == ["argparse.Namespace"]
    assert any("weights_only=False: argparse.Namespace" in w for w in data["warnings"])
    assert [e["name"] for e in data["entries"] if e["dtype"]] == ["w"]


class _Sub(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("cache", torch.zeros(2), persistent=False)
        self.register_buffer("count", torch.tensor(0))


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sub = _Sub()
        self.bn = torch.nn.BatchNorm1d(2)
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.register_buffer("running", torch.ones(4))
        self.register_buffer("scratch", torch.zeros(5), persistent=False)
        self.register_buffer("absent", None)


def _expected_kinds(model: torch.nn.Module) -> dict[str, str]:
    out = {n: Kind.PARAMETER for n, _ in model.named_parameters()}
    for mod_name, mod in model.named_modules():
        dot = f"{mod_name}." if mod_name else ""
        for b, t in mod._buffers.items():
            if t is not None:
                out[dot + b] = Kind.BUFFER_NP if b in mod._non_persistent_buffers_set else Kind.BUFFER
    assert set(out) == {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return out


def test_pickled_module_exact_classification(tmp_path: Path) -> None:
    model = _Net()
    p = tmp_path / "model.pt"
    torch.save(model, p)
    ck = load_checkpoint(str(p))
    got = {e.name: e.kind for e in ck.entries if e.tensor is not None and e.group == ""}
    want = _expected_kinds(model)
    assert got == want
    assert {k for k, v in want.items() if v == Kind.BUFFER_NP} == {"scratch", "sub.cache"}
    assert set(model.state_dict()) == {k for k, v in want.items() if v != Kind.BUFFER_NP}
    assert f"{__name__}._Net" in ck.unsafe_globals


def test_pickled_module_does_not_import_its_class(tmp_path: Path) -> None:
    p = tmp_path / "model.pt"
    torch.save(_Net(), p)
    # In a fresh interpreter whose sys.path can import the test module (cwd is the repo root).
    code = ("import json, sys\nfrom statecli.load import load_checkpoint\nck = load_checkpoint(sys.argv[1])\n"
            "print(json.dumps({'imported': sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.')),"
            " 'kinds': {e.name: e.kind for e in ck.entries if e.tensor is not None}}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["imported"] == []
    assert out["kinds"] == _expected_kinds(_Net())
    assert __name__ in {"tests.security.test_safety", "test_safety"}


# -- 4. terminal escapes in names ----------------------------------------------------------------

EVIL_KEY = "layer.\x1b[2J\x1b[31mevil\x07.\u202eweight"
RAW_CONTROLS = ("\x1b", "\x07", "\u202e")


def _check_escapes(p: Path) -> None:
    table = _inspect(p)
    assert table.exit_code == 0, table.output
    for ch in RAW_CONTROLS:
        assert ch not in table.stdout, repr(ch)
        assert ch not in table.stderr, repr(ch)
    assert "evil" in table.stdout
    for fmt in ("csv", "md"):
        other = _inspect(p, "--format", fmt)
        assert other.exit_code == 0, other.output
        for ch in RAW_CONTROLS:
            assert ch not in other.stdout, (fmt, repr(ch))
    js = _inspect(p, "--format", "json")
    assert js.exit_code == 0, js.output
    assert "\x1b" not in js.stdout and "\x07" not in js.stdout
    names = [e["name"] for e in json.loads(js.stdout)["entries"]]
    assert EVIL_KEY in names and "plain" in names


def test_escape_sequences_in_torch_keys(tmp_path: Path) -> None:
    p = tmp_path / "keys.pt"
    torch.save({EVIL_KEY: torch.zeros(2), "plain": torch.ones(1)}, p)
    _check_escapes(p)


def test_escape_sequences_in_safetensors_keys(tmp_path: Path) -> None:
    p = tmp_path / "keys.safetensors"
    save_file({EVIL_KEY: torch.zeros(2), "plain": torch.ones(1)}, str(p))
    _check_escapes(p)


def test_escape_sequences_in_values_and_metadata(tmp_path: Path) -> None:
    p = tmp_path / "values.pt"
    torch.save({"w": torch.zeros(2), "note": EVIL_KEY, EVIL_KEY + "_n": 3}, p)
    result = _inspect(p)
    assert result.exit_code == 0, result.output
    for ch in RAW_CONTROLS:
        assert ch not in result.output, repr(ch)
    s = tmp_path / "meta.safetensors"
    save_file({"w": torch.zeros(2)}, str(s), metadata={"k": EVIL_KEY})
    result = _inspect(s)
    assert result.exit_code == 0, result.output
    for ch in RAW_CONTROLS:
        assert ch not in result.output, repr(ch)


def test_escape_sequences_in_error_message(tmp_path: Path) -> None:
    p = tmp_path / "bad\x1b[31m\u202e.pt"
    p.write_bytes(b"")
    result = _inspect(p)
    assert result.exit_code == 2
    for ch in RAW_CONTROLS:
        assert ch not in result.stderr, repr(ch)
    assert result.stderr.count("\n") == 1


# -- 5. the input is never modified --------------------------------------------------------------

def test_input_never_modified(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.randn(4, 4), "b": torch.randn(4)}, good)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.randn(4)}, legacy, _use_new_zipfile_serialization=False)
    st = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(4)}, str(st))
    evil = _zip_with_pickle(tmp_path / "evil.pt", pickle.dumps(_Reduce(os.system, ("true",)), protocol=2))
    broken = _zip_with_pickle(tmp_path / "view.pt", _tensor_pickle(0, (9,), (1,)))
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(st.read_bytes()[:-2])
    cases = [(good, 0), (legacy, 0), (st, 0), (evil, 3), (broken, 2), (trunc, 2)]
    before = {p: (_sha(p), p.stat().st_size, p.stat().st_mtime_ns) for p, _ in cases}
    listing = sorted(os.listdir(tmp_path))
    for p, code in cases:
        for extra in ((), ("--format", "json"), ("--stats",)):
            result = _inspect(p, *extra)
            assert result.exit_code == code, (p, extra, result.output)
    assert {p: (_sha(p), p.stat().st_size, p.stat().st_mtime_ns) for p, _ in cases} == before
    assert sorted(os.listdir(tmp_path)) == listing


@pytest.mark.parametrize("proto", [2, 4])
def test_no_command_ever_runs_a_payload(tmp_path: Path, proto: int) -> None:
    """Every statecli command, given a checkpoint whose pickle would run os.system: the marker file
    a payload creates never appears, loading commands refuse with exit 3, scan says dangerous (3),
    check fails the safe-pickle rule (1)."""
    marker = tmp_path / "MARKER"
    make, _ = _payloads(marker)["os.system"]
    evil = _zip_with_pickle(tmp_path / "evil.pt", make(proto))
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(2)}, good)
    out = tmp_path / "out.pt"
    commands = {
        ("inspect", str(evil)): 3, ("inspect", str(evil), "--stats"): 3, ("size", str(evil)): 3,
        ("diff", str(good), str(evil)): 3, ("diff", str(evil), str(good)): 3,
        ("cast", str(evil), "--dtype", "half", "-o", str(out)): 3, ("strip", str(evil), "--buffers", "-o", str(out)): 3,
        ("move", str(evil), "--device", "cpu", "-o", str(out)): 3, ("convert", str(evil), "-o", str(out)): 3,
        ("scan", str(evil)): 3, ("check", str(evil)): 3, ("check", str(evil), "--no-nan", "--devices", "cpu"): 3,
    }
    for args, code in commands.items():
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == code, (args, result.output)
        assert not marker.exists(), args
        assert not out.exists(), args


@pytest.mark.parametrize("name", ["cnn.pt", "cnn.safetensors", "legacy.pt", "dtypes.pt", "train_ckpt.pt", "full_model.pt"])
def test_mutated_samples_fail_cleanly(tmp_path: Path, samples: Path, name: str) -> None:
    """Bit flips, truncations and insertions in real files: every reader either reads the result or
    raises StatecliError (one line, exit 2/3) - never another exception, which would be a traceback."""
    from statecli.analyses.scan import scan
    from statecli.errors import StatecliError

    rng = random.Random(name)
    data = (samples / name).read_bytes()
    path = tmp_path / f"m{Path(name).suffix}"
    for _ in range(60):
        b = bytearray(data)
        roll = rng.random()
        if roll < 0.5:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif roll < 0.8:
            del b[rng.randrange(len(b)):]
        else:
            pos = rng.randrange(len(b))
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        path.write_bytes(bytes(b))
        for read in (load_checkpoint, scan):
            try:
                read(str(path))
            except StatecliError:
                pass
