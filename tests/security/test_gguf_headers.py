"""Hostile GGUF headers, one file per class: every count, length, offset, type and alignment a header
declares is checked against the file and a cap before use. Each is one line naming the file (exit 2,
corrupt), in bounded memory, never a traceback; bytes no tensor accounts for are a scan finding
(exit 3: a place a payload hides). The SECURITY.md table lists the same cases."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_files import kv, raw_gguf, s, tinfo, write_gguf

from .test_blowups import run_bounded

MAX_RSS_MIB = 200
U8, U32, STR, ARR = 0, 4, 8, 9
Q4_0, F32 = 2, 0
F32_16 = bytes(64)  # 16 float32 zeros

# case -> (file bytes, words the one error line must hold)
CASES: dict[str, tuple[bytes, str]] = {
    "truncated-header": (raw_gguf([kv("general.name", STR, s("tiny"))], [])[:30], "truncated"),
    "tensor-count-2^60": (raw_gguf([], [], n_tensors=1 << 60), "tensor count"),
    "kv-count-2^40": (raw_gguf([], [], n_kv=1 << 40), "metadata count"),
    "string-length-2^62": (raw_gguf([s("general.name", 1 << 62)], []), "string"),
    "key-length-past-file": (raw_gguf([kv("a", STR, s("x", 4096))], []), "string"),
    "u8-array-2^40": (raw_gguf([kv("a", ARR, struct.pack("<IQ", U8, 1 << 40))], []), "array"),
    "string-array-2^40": (raw_gguf([kv("a", ARR, struct.pack("<IQ", STR, 1 << 40))], []), "array"),
    "nested-arrays-deep": (raw_gguf([kv("a", ARR, struct.pack("<IQ", ARR, 1) * 12 + struct.pack("<IQ", U8, 0))], []),
                           "deep"),
    "unknown-value-type": (raw_gguf([kv("a", 99, b"\0" * 8)], []), "value type"),
    "unknown-array-type": (raw_gguf([kv("a", ARR, struct.pack("<IQ", 77, 1))], []), "item type"),
    "duplicate-key": (raw_gguf([kv("a", U32, b"\1\0\0\0"), kv("a", U32, b"\2\0\0\0")], []), "twice"),
    "unknown-ggml-type": (raw_gguf([], [tinfo("w", (16,), 250, 0)], F32_16), "GGML type"),
    "five-dims": (raw_gguf([], [tinfo("w", (1, 1, 1, 1, 16), F32, 0)], F32_16), "dimensions"),
    "zero-dims": (raw_gguf([], [tinfo("w", (), F32, 0)], F32_16), "dimensions"),
    "numel-overflow": (raw_gguf([], [tinfo("w", (1 << 40, 1 << 40), F32, 0)], F32_16), "elements"),
    "offset-past-end": (raw_gguf([], [tinfo("w", (16,), F32, 1 << 20)], F32_16), "truncated"),
    "offset-2^63": (raw_gguf([], [tinfo("w", (16,), F32, 1 << 63)], F32_16), "truncated"),
    "misaligned": (raw_gguf([], [tinfo("w", (4,), F32, 8)], F32_16), "aligned"),
    "overlapping": (raw_gguf([], [tinfo("a", (16,), F32, 0), tinfo("b", (8,), F32, 32)], F32_16), "overlaps"),
    "duplicate-tensor": (raw_gguf([], [tinfo("w", (8,), F32, 0), tinfo("w", (8,), F32, 32)], F32_16), "twice"),
    "partial-block": (raw_gguf([], [tinfo("w", (33,), Q4_0, 0)], bytes(64)), "blocks"),
    "tensor-name-64k": (raw_gguf([], [s("w" * 70000) + struct.pack("<IQIQ", 1, 16, F32, 0)], F32_16), "string"),
    "alignment-zero": (raw_gguf([kv("general.alignment", U32, struct.pack("<I", 0))], []), "alignment"),
    "alignment-odd": (raw_gguf([kv("general.alignment", U32, struct.pack("<I", 48))], []), "alignment"),
    "alignment-as-string": (raw_gguf([kv("general.alignment", STR, s("32"))], []), "alignment"),
    "big-endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
    "version-1": (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "version 1"),
    "version-99": (b"GGUF" + struct.pack("<IQQ", 99, 0, 0), "version 99"),
    "split-count-absurd": (raw_gguf([kv("split.count", 2, struct.pack("<H", 60000)),
                                     kv("split.no", 2, struct.pack("<H", 0))], []), "split"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("gguf-headers")
    out = {}
    for name, (data, _) in CASES.items():
        assert len(data) < 1 << 20
        out[name] = folder / f"{name}.gguf"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_header_is_one_error_line(files: dict[str, Path], case: str) -> None:
    for argv in (["inspect", str(files[case])], ["scan", str(files[case])]):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 2, (case, argv, result.output)
        assert CASES[case][1] in result.output, (case, result.output)
        assert files[case].name in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("case", ["u8-array-2^40", "string-array-2^40", "tensor-count-2^60", "string-length-2^62"])
def test_declared_huge_sizes_are_refused_not_allocated(files: dict[str, Path], case: str) -> None:
    r = run_bounded(["inspect", str(files[case])])
    assert r["code"] == 2, r
    assert float(r["rss_mib"]) < MAX_RSS_MIB, r
    assert "Traceback" not in str(r["stderr"]), r


def test_a_large_array_that_fits_is_read(tmp_path: Path) -> None:
    """The caps refuse what cannot be, not what is big: 200k one-byte values in a 200 kB file read."""
    path = tmp_path / "big.gguf"
    path.write_bytes(raw_gguf([kv("a", ARR, struct.pack("<IQ", U8, 200_000) + bytes(200_000))], []))
    result = CliRunner().invoke(app, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "200,000 u" in result.output  # 'uint8'


@pytest.mark.parametrize("where", ["trailing", "gap"])
def test_bytes_no_tensor_accounts_for_are_a_scan_finding(tmp_path: Path, where: str) -> None:
    path = write_gguf(tmp_path / "ok.gguf", {"a.weight": (np.ones(64, np.float32), "F32"),
                                             "b.weight": (np.ones(64, np.float32), "F32")})
    data = path.read_bytes()
    if where == "trailing":
        data += b"PK\x03\x04" + b"payload" * 100
    else:  # move b's bytes 4 KiB further and point its offset there: a gap only a payload fills
        import gguf

        t = gguf.GGUFReader(path).tensors[1]
        head, body = data[:t.data_offset], data[t.data_offset:]
        rel = struct.pack("<Q", t.data_offset - gguf.GGUFReader(path).data_offset)
        moved = struct.pack("<Q", t.data_offset - gguf.GGUFReader(path).data_offset + 4096)
        at = head.rfind(rel)
        data = head[:at] + moved + head[at + 8:] + b"\x90" * 4096 + body
    path.write_bytes(data)
    scan = CliRunner().invoke(app, ["scan", str(path)])
    assert scan.exit_code == 3, scan.output
    assert "belong to no tensor" in scan.output
    inspect = CliRunner().invoke(app, ["inspect", str(path)])
    assert inspect.exit_code == 0 and "belong to no tensor" in inspect.output


def test_a_clean_file_scans_safe(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "ok.gguf", {"a.weight": (np.ones((2, 32), np.float32), "Q4_0")}, alignment=64)
    scan = CliRunner().invoke(app, ["scan", str(path)])
    assert scan.exit_code == 0, scan.output


def test_mutated_headers_end_in_one_error_line(tmp_path: Path) -> None:
    """Every byte of a real header set to hostile values, one at a time: the file reads or is refused
    as BadInput, never another exception (a class of corruption no hand-made case names)."""
    from statecli.errors import StatecliError
    from statecli.formats.gguf.read import read_parts
    from statecli.load import load_checkpoint

    base = write_gguf(tmp_path / "base.gguf", {"blk.0.w.weight": (np.ones((2, 32), np.float32), "Q8_0"),
                                               "n.weight": (np.ones(8, np.float32), "F32")},
                      {"general.name": "m", "tokenizer.ggml.tokens": ["a", "bb", "ccc"], "x.f": 0.5})
    data = base.read_bytes()
    header_end = read_parts(str(base))[0].header_bytes
    target = tmp_path / "mutated.gguf"
    for i in range(4, header_end):
        for value in (0x00, 0x7F, 0xFF):
            if data[i] == value:
                continue
            target.write_bytes(data[:i] + bytes([value]) + data[i + 1:])
            try:
                load_checkpoint(str(target))
            except StatecliError:
                pass
