"""Sniff as the loaders do (issue 19, item 5): a file the ordinary loaders (pickle.load, torch.load
weights_only=False, np.load allow_pickle=True, torch's tarfile-based legacy load) would run is read the
way they read it, so its payload is a finding (exit 3) for `scan` and every command, never
"unreadable" (exit 2) and never safe. Each class is proven once under the ordinary loader."""

from __future__ import annotations

import io
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.analyses.scan import scan
from statecli.cli import app

runner = CliRunner()


def _system(canary: Path) -> bytes:
    """The body of a protocol-0 payload: os.system creating the canary (text opcodes only)."""
    return b"cos\nsystem\n(S'touch " + shlex.quote(str(canary)).encode() + b"'\ntR."


def _refused_everywhere(p: Path) -> None:
    r = scan(str(p))
    assert r.exit_code == 3 and "os.system" in {g.name for g in r.globals}, r.to_dict()
    for cmd in (["inspect", str(p)], ["check", str(p)], ["size", str(p)]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 3, (cmd, res.output)


# -- a pickle stream from whatever first opcode --------------------------------------------------

FIRST_OPCODES = {
    "none-pop": b"N0", "int-pop": b"I7\n0", "mark-pop": b"(0", "list-pop": b"]0", "dict-pop": b"}0",
    "float-pop": b"F1.5\n0", "string-pop": b"S'x'\n0", "unicode-pop": b"Vabc\n0", "binint1-pop": b"K\x070",
    "newtrue-pop": b"\x880", "long-pop": b"L7L\n0", "binint-pop": b"J\x01\x00\x00\x000",
    "binfloat-pop": b"G" + b"\x00" * 8 + b"0", "binunicode-pop": b"X\x01\x00\x00\x00a0", "tuple-pop": b")0",
    "frame": b"\x95" + (len(b"N0") + 30).to_bytes(8, "little"), "empty-stop-first": b"N.",
}


@pytest.mark.parametrize("name", sorted(FIRST_OPCODES))
@pytest.mark.parametrize("suffix", [".pt", ".pkl", ".bin"])
def test_pickle_from_any_first_opcode_is_read_and_refused(tmp_path: Path, name: str, suffix: str) -> None:
    canary = tmp_path / "canary"
    p = tmp_path / f"model{suffix}"
    p.write_bytes(FIRST_OPCODES[name] + _system(canary))
    _refused_everywhere(p)
    assert not canary.exists()


def test_first_opcode_payloads_run_under_the_ordinary_loaders(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    pickle.loads(b"N0" + _system(canary))  # pickle.load runs it
    assert canary.exists()
    canary.unlink()
    p = tmp_path / "model.pt"
    p.write_bytes(b"I7\n0" + _system(canary))
    with pytest.raises(Exception):  # noqa: B017 - torch.load fails after the payload ran (not the magic number)
        torch.load(p, weights_only=False)
    assert canary.exists()


def test_folder_walk_scans_pkl_not_text(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "state.pkl").write_bytes(b"N0" + _system(canary))
    (tmp_path / "d" / "notes.txt").write_bytes(b"N0" + _system(canary))
    res = runner.invoke(app, ["scan", "--format", "json", str(tmp_path / "d")])
    assert res.exit_code == 3 and "state.pkl" in res.output and "notes.txt" not in res.output


@pytest.mark.parametrize("protocol", [1, 2])
def test_legacy_save_of_any_protocol_reads(tmp_path: Path, protocol: int) -> None:
    p = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3), "b": torch.zeros(2, dtype=torch.int64)}, p,
               _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    assert torch.load(p, weights_only=False)["w"].shape == (3,)  # our own benign file
    assert scan(str(p)).exit_code == 0
    res = runner.invoke(app, ["inspect", str(p)])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("data", [b"hello world\n", b"\x89PNG\r\n\x1a\n" + bytes(40), b"\x7fELF\x02\x01\x01\x00" + bytes(40)])
def test_a_file_with_no_pickle_is_unreadable_with_what_it_looks_like(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "model.pt"
    p.write_bytes(data)
    r = scan(str(p))
    assert r.exit_code == 2 and r.error is not None and "not a checkpoint" in r.error, r.to_dict()
    res = runner.invoke(app, ["inspect", str(p)])
    assert res.exit_code == 2 and "not a checkpoint" in res.output



# -- stand-ins behave as str/bytes/int where the C unpickler needs them ------------------------------

def _u(text: str) -> bytes:
    b = text.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _computed_system(canary: Path, via: bytes = b"cbuiltins\nstr\n") -> bytes:
    """os.system named by STACK_GLOBAL on `builtins.str('os')`, `builtins.str('system')`: no static
    walk sees the name, only the unpickler's decoding does."""
    return (via + b"(" + _u("os") + b"tR" + via + b"(" + _u("system") + b"tR\x93("
            + _u("touch " + shlex.quote(str(canary))) + b"tR.")


VARIANTS = {
    "str": lambda c: b"\x80\x04" + _computed_system(c),
    "str-from-bytes": lambda c: b"\x80\x04" + _computed_system(c).replace(
        b"(" + _u("os") + b"tR", b"(C\x02os" + _u("ascii") + b"tR"),
    "build-on-function-first": lambda c: (b"\x80\x04ccopyreg\n_reconstructor\n}" + _u("a") + b"K\x01sb0"
                                          + _computed_system(c)),
    "build-on-torch-function-first": lambda c: (b"\x80\x04ctorch.nn.functional\nrelu\nN}" + _u("a") + b"K\x01s\x86b0"
                                                + _computed_system(c)),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_computed_global_after_stand_ins_is_dangerous(tmp_path: Path, name: str) -> None:
    canary = tmp_path / "canary"
    p = tmp_path / "model.pt"
    p.write_bytes(VARIANTS[name](canary))
    _refused_everywhere(p)
    assert not canary.exists()
    pickle.loads(p.read_bytes())  # the ordinary loader decodes and runs it
    assert canary.exists()


@pytest.mark.parametrize("args", [b"J\x00\x10\xa5\xd4", b"(X" + (5000).to_bytes(4, "little") + b"9" * 5000 + b"t"])
def test_stand_ins_never_allocate_or_crash(tmp_path: Path, args: bytes) -> None:
    # bytes(10**12 / 4) would allocate; a 5000-digit int string is past Python's int limit: stubs stay.
    p = tmp_path / "model.pt"
    arg = args if args.endswith(b"t") else b"(" + args + b"t"
    p.write_bytes(b"\x80\x04cbuiltins\nbytes\n" + arg + b"Rcbuiltins\nint\n" + arg + b"R\x86.")
    r = scan(str(p))
    assert r.exit_code in (0, 2) and r.verdict is not None


def test_build_on_a_builder_leaves_it_unchanged(tmp_path: Path) -> None:
    from statecli.pickle import unpickler

    before = unpickler._rebuild_tensor_v2.__defaults__
    p = tmp_path / "model.pt"  # BUILD with a slot state: the C unpickler would setattr __defaults__
    p.write_bytes(b"\x80\x04ctorch._utils\n_rebuild_tensor_v2\n(N(" + _u("__defaults__") + b"(\x88tdtb0"
                  + _computed_system(tmp_path / "canary"))
    assert scan(str(p)).exit_code == 3
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 3
    assert unpickler._rebuild_tensor_v2.__defaults__ == before


# -- npy/npz object arrays by numpy's parsed dtype ------------------------------------------------

def _npy(descr: str, payload: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    header = ("{'descr': " + descr + ", 'fortran_order': False, 'shape': (1,), }").encode()
    header += b" " * (63 - (len(header) + 12) % 64) + b"\n"
    size = len(header).to_bytes(2 if version == (1, 0) else 4, "little")
    return b"\x93NUMPY" + bytes(version) + size + header + payload


DESCRS = ["'O'", "'|O'", "'object'", "'O8'", "[('a', 'object')]", "[('a', '<f4'), ('b', [('c', 'O')])]",
          "('object', (2,))", "[('a', ('O', (3,)))]"]


@pytest.mark.parametrize("descr", DESCRS)
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_object_array_by_parsed_dtype(tmp_path: Path, descr: str, version: tuple[int, int]) -> None:
    import numpy as np

    canary = tmp_path / "canary"
    data = _npy(descr, _system(canary), version)
    p = tmp_path / "array.npy"
    p.write_bytes(data)
    r = scan(str(p))
    assert r.exit_code == 3 and "os.system" in {g.name for g in r.globals}, (descr, r.to_dict())
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 3
    z = tmp_path / "arrays.npz"  # np.load's NpzFile: any member with the magic is an array
    import zipfile

    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("x.npy", _npy("'<f4'", bytes(4)))
        zf.writestr("Y.NPY" if version == (1, 0) else "y", data)
    assert scan(str(z)).exit_code == 3
    assert runner.invoke(app, ["inspect", str(z)]).exit_code == 3
    assert not canary.exists()
    try:
        np.load(p, allow_pickle=True)  # the ordinary loader runs the pickle ...
    except Exception:  # noqa: BLE001 - ... and may then fail on its result, which is not an array
        pass
    assert canary.exists()


def test_numeric_npy_is_not_a_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "array.npy"
    p.write_bytes(_npy("[('a', '<f4'), ('b', [('c', '<i8')])]", bytes(12)))
    assert scan(str(p)).exit_code == 2


# -- zip member names as torch matches them (case-insensitively) ----------------------------------

def _rezip(src: Path, dst: Path, rename: dict[str, str], replace: dict[str, bytes] | None = None) -> Path:
    import zipfile

    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            rel = info.filename.split("/", 1)[1]
            data = (replace or {}).get(rel, zi.read(info))
            zo.writestr(info.filename.split("/", 1)[0] + "/" + rename.get(rel, rel), data)
    return dst


def _saved(tmp_path: Path) -> Path:
    p = tmp_path / "good.pt"
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, p)
    return p


CASE_RENAMES = {"data.pkl": ["DATA.PKL", "Data.pkl", "data.PKL"], "byteorder": ["BYTEORDER", "ByteOrder"],
                "version": ["VERSION"], "data/0": ["DATA/0", "Data/0"], ".data/serialization_id": [".DATA/SERIALIZATION_ID"],
                ".format_version": [".FORMAT_VERSION"], ".storage_alignment": [".Storage_Alignment"]}
CASES = [(rel, new) for rel, news in CASE_RENAMES.items() for new in news]


@pytest.mark.parametrize(("rel", "new"), CASES)
def test_member_names_case_variants_read_as_torch_reads_them(tmp_path: Path, rel: str, new: str) -> None:
    src = _saved(tmp_path)
    p = _rezip(src, tmp_path / "case.pt", {rel: new})
    import zipfile

    if rel not in {i.filename.split("/", 1)[1] for i in zipfile.ZipFile(src).infolist()}:
        pytest.skip(f"this torch writes no {rel}")
    assert torch.load(p, weights_only=True)["w"].tolist() == list(range(6))  # torch finds the record
    r = scan(str(p))
    assert r.exit_code == 0, r.to_dict()
    res = runner.invoke(app, ["inspect", str(p)])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("new", CASE_RENAMES["data.pkl"])
def test_payload_in_a_case_variant_data_pkl_is_refused(tmp_path: Path, new: str) -> None:
    canary = tmp_path / "canary"
    p = _rezip(_saved(tmp_path), tmp_path / "case.pt", {"data.pkl": new}, {"data.pkl": _system(canary)})
    _refused_everywhere(p)
    assert not canary.exists()
    try:
        torch.load(p, weights_only=False)  # torch's reader finds `DATA.PKL` for data.pkl and runs it
    except Exception:  # noqa: BLE001 - the payload's result is not a state dict
        pass
    assert canary.exists()


def test_case_variant_twin_of_data_pkl_is_a_duplicate_and_scanned(tmp_path: Path) -> None:
    import zipfile

    canary = tmp_path / "canary"
    p = _saved(tmp_path)
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr(zf.namelist()[0].split("/")[0] + "/DATA.PKL", _system(canary))
    r = scan(str(p))
    assert r.exit_code == 3 and "os.system" in {g.name for g in r.globals}, r.to_dict()
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 3


# -- legacy tar files: every header format tarfile takes, every pickle between raw records --------

def _tar(members: list[tuple[str, bytes]], fmt: str) -> bytes:
    import tarfile

    buf = io.BytesIO()
    tar_format = {"v7": tarfile.USTAR_FORMAT, "ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT,
                  "pax": tarfile.PAX_FORMAT}[fmt]
    with tarfile.open(fileobj=buf, mode="w", format=tar_format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if fmt == "pax":
                info.pax_headers = {"comment": "x"}
            tar.addfile(info, io.BytesIO(data))
    out = bytearray(buf.getvalue())
    if fmt == "v7":  # no magic, no version: a pre-POSIX header, its checksum recomputed
        at = 0
        while at < len(out) and out[at:at + 512].strip(b"\0"):
            size = int(out[at + 124:at + 136].strip(b"\0 ") or b"0", 8)
            out[at + 257:at + 265] = bytes(8)
            out[at + 148:at + 156] = b" " * 8
            out[at + 148:at + 156] = b"%06o\0 " % sum(out[at:at + 512])
            at += 512 + (size + 511) // 512 * 512
    return bytes(out)


def _storages(views: bytes) -> bytes:
    """One float storage of two elements, its raw bytes, then `views` where the views pickle goes."""
    return (pickle.dumps(1, 2) + pickle.dumps(("0", "cpu", torch.FloatStorage), 2)
            + (2).to_bytes(8, "little") + bytes(8) + views)


def _tensors(after: bytes) -> bytes:
    """One tensor record of the storage above: its pickle, then ndim, padding, size, stride, offset."""
    return (pickle.dumps(1, 2) + pickle.dumps(("t0", "0", torch.FloatTensor), 2) + (1).to_bytes(4, "little")
            + bytes(4) + (2).to_bytes(8, "little") + (1).to_bytes(8, "little") + bytes(8) + after)


TAR_FORMATS = ["v7", "ustar", "gnu", "pax"]


@pytest.mark.parametrize("fmt", TAR_FORMATS)
@pytest.mark.parametrize("where", ["storages-views", "storages-after-views", "tensors-after-records", "pickle"])
def test_tar_payload_after_raw_records_is_refused(tmp_path: Path, fmt: str, where: str) -> None:
    canary = tmp_path / "canary"
    payload = _system(canary)
    views = pickle.dumps([], 2)
    members = {"storages": _storages(payload if where == "storages-views" else views
                                      + (payload if where == "storages-after-views" else b"")),
               "tensors": _tensors(payload if where == "tensors-after-records" else b""),
               "pickle": payload if where == "pickle" else pickle.dumps({"w": 1}, 2)}
    p = tmp_path / "old.pt"
    p.write_bytes(_tar([("sys_info", pickle.dumps({}, 2)), *members.items()], fmt))
    _refused_everywhere(p)
    assert not canary.exists()
    if where in ("storages-views", "pickle"):
        try:
            torch.load(p, weights_only=False)  # torch's legacy tar loader runs it
        except Exception:  # noqa: BLE001 - the payload's result is no views list / state dict
            pass
        assert canary.exists()


@pytest.mark.parametrize("fmt", TAR_FORMATS)
def test_benign_tar_of_every_format_is_unsupported(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / "old.pt"
    p.write_bytes(_tar([("sys_info", pickle.dumps({}, 2)), ("storages", _storages(pickle.dumps([], 2))),
                        ("tensors", _tensors(b"")), ("pickle", pickle.dumps({"w": 1}, 2))], fmt))
    r = scan(str(p))
    assert r.exit_code == 2 and r.error is not None and "pre-0.4" in r.error, r.to_dict()
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 2


def test_tar_that_also_looks_like_safetensors_is_a_tar(tmp_path: Path) -> None:
    """The first header's name field is free bytes: a safetensors length and `{...}` there make a file
    both; torch.load reads it as a tar (and runs its pickles), so statecli does too."""
    import struct

    canary = tmp_path / "canary"
    data = bytearray(_tar([("sys_info", pickle.dumps({}, 2)), ("storages", _storages(_system(canary))),
                           ("tensors", _tensors(b"")), ("pickle", pickle.dumps({"w": 1}, 2))], "ustar"))
    header = b'{"__metadata__":{"a":"b"}}'.ljust(80)
    data[0:100] = (struct.pack("<Q", len(header)) + header).ljust(100, b"\0")
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[0:512])
    p = tmp_path / "model.pt"  # (torch.load hands a *.safetensors path to safetensors, when installed)
    p.write_bytes(bytes(data))
    _refused_everywhere(p)
    assert not canary.exists()
    try:
        torch.load(p, weights_only=False)
    except Exception:  # noqa: BLE001 - the payload's result is no views list
        pass
    assert canary.exists()
