"""zipcheck's own central-directory reader and block-read local headers: the same members, offsets
and findings as zipfile and one pread per header, and zipfile's reading wherever they could differ."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest

from statecli.errors import BadInput
from statecli.formats import zipcheck
from statecli.formats.zipcheck import Archive, _Directory, _local_headers

FIELDS = ("filename", "flag_bits", "compress_type", "CRC", "compress_size", "file_size", "header_offset")


def _archive(path: Path, members: dict[str, bytes], comment: bytes = b"", zip64: bool = False,
             extra: bytes = b"") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.extra = extra
            with zf.open(info, "w", force_zip64=zip64) as f:
                f.write(data)
        zf.comment = comment
    return path


def _torchlike(tmp_path: Path, n: int = 40, size: int = 4) -> Path:
    members = {"arch/data.pkl": b"\x80\x02}q\x00.", "arch/byteorder": b"little"}
    members |= {f"arch/data/{i}": bytes(size) for i in range(n)}
    return _archive(tmp_path / "a.pt", members)


def _rows(infos: list) -> list[tuple]:
    return [tuple(getattr(i, f) for f in FIELDS) for i in infos]


def test_directory_matches_zipfile(tmp_path: Path) -> None:
    path = _torchlike(tmp_path)
    with open(path, "rb") as f:
        d = _Directory.read(f)
        assert d is not None
        zf = zipfile.ZipFile(f)
        assert _rows(d.infolist()) == _rows(zf.infolist())
        assert d.start_dir == zf.start_dir


@pytest.mark.parametrize("kind", ["comment", "extra", "prepended"])
def test_directory_leaves_unusual_archives_to_zipfile(tmp_path: Path, kind: str) -> None:
    members = {"arch/data.pkl": b"\x80\x02}q\x00."}
    if kind == "comment":
        path = _archive(tmp_path / "a.zip", members, comment=b"hello")
    elif kind == "extra":
        path = _archive(tmp_path / "a.zip", members, extra=struct.pack("<HH", 0x4242, 2) + b"zz")
    else:
        inner = _archive(tmp_path / "inner.zip", members).read_bytes()
        path = tmp_path / "a.zip"
        path.write_bytes(b"#!prefix\n" + inner)
    with open(path, "rb") as f:
        assert _Directory.read(f) is None
    arc = Archive(str(path))  # and the archive still opens, through zipfile
    try:
        assert isinstance(arc.zf, zipfile.ZipFile)
        assert "arch/data.pkl" in arc.infos
    finally:
        arc.close()


def test_zip64_end_records_are_read(tmp_path: Path) -> None:
    # torch.save writes the zip64 end record and locator even for small archives
    import torch

    path = tmp_path / "t.pt"
    torch.save({f"w{i}": torch.zeros(1) for i in range(5)}, path)
    with open(path, "rb") as f:
        d = _Directory.read(f)
        assert d is not None
        assert _rows(d.infolist()) == _rows(zipfile.ZipFile(f).infolist())


def test_local_headers_are_read_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _torchlike(tmp_path, n=200)
    calls: list[int] = []
    real = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        calls.append(n)
        return real(fd, n, offset)

    with open(path, "rb") as f:
        offsets = [i.header_offset for i in zipfile.ZipFile(f).infolist()]
        monkeypatch.setattr(zipcheck.os, "pread", counting)
        heads = _local_headers(f, offsets, os.fstat(f.fileno()).st_size)
    assert set(heads) == set(offsets)
    assert len(calls) == 1  # 202 headers, a few bytes apart: one read
    for head in heads.values():
        assert head[:4] == zipcheck.MAGIC
        name_len = struct.unpack_from("<H", head, 26)[0]
        assert len(head) == 30 + name_len


def test_far_apart_headers_are_read_alone(tmp_path: Path) -> None:
    path = _torchlike(tmp_path, n=3, size=zipcheck._GAP * 3)
    with open(path, "rb") as f:
        infos = {i.filename: i.header_offset for i in zipfile.ZipFile(f).infolist()}
        heads = _local_headers(f, list(infos.values()), os.fstat(f.fileno()).st_size)
    # data.pkl, byteorder and data/0 sit together; data/1 and data/2 each follow 12 KiB of data:
    # no block is read across a record's bytes, those headers are left to the caller's own reads
    assert set(heads) == {infos["arch/data.pkl"], infos["arch/byteorder"], infos["arch/data/0"]}
    arc = Archive(str(path))
    try:
        assert arc.offsets["arch/data/2"] == infos["arch/data/2"] + 30 + len("arch/data/2")
        assert not arc.problems
    finally:
        arc.close()


def test_archive_findings_unchanged(tmp_path: Path) -> None:
    path = _torchlike(tmp_path)
    data = bytearray(path.read_bytes())
    arc = Archive(str(path))
    off = arc.infos["arch/data/3"].header_offset
    arc.close()
    data[off + 30:off + 30 + 11] = b"arch/DATA/3"  # the local header names another member
    path.write_bytes(bytes(data))
    arc = Archive(str(path))
    try:
        assert any("local header names" in p and "arch/data/3" in p for p in arc.problems)
        assert isinstance(arc.zf, _Directory)
    finally:
        arc.close()


def test_missing_local_header_is_refused(tmp_path: Path) -> None:
    path = _torchlike(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        off = zf.getinfo("arch/data/5").header_offset
    data[off:off + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="local header of 'arch/data/5' is missing"):
        Archive(str(path))


def test_shadowed_duplicate_opens_through_zipfile(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("arch/data.pkl", b"\x80\x02}q\x00.")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zf.writestr("arch/data.pkl", b"second")
    arc = Archive(str(path))
    try:
        assert any("duplicate zip member" in p for p in arc.problems)
        shadowed = [i for i in arc.zf.infolist() if arc.infos.get(i.filename) is not i]
        assert len(shadowed) == 1
        with arc.zf.open(shadowed[0]) as member:
            assert member.read() == b"second"
    finally:
        arc.close()
