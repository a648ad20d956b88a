"""GGUF reading against gguf-py's own GGUFReader (names, shapes, types, offsets, metadata) and
gguf.quants.dequantize (values), for every GGML type gguf-py can dequantize; split models from any
part; general.alignment; metadata reads without importing gguf-py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli import app
from statecli.formats.gguf.header import GgufArray, read_header
from statecli.formats.gguf.types import COMPUTED, FILE_TYPES, GGML_TYPES
from statecli.formats.gguf.values import gguf_reader
from statecli.load import load_checkpoint
from tests.gguf_files import write_gguf

gguf = pytest.importorskip("gguf")
RNG = np.random.default_rng(7)


def _dequantizable() -> list[str]:
    """Every GGML type gguf-py dequantizes (asked of gguf-py, so a new type joins the test)."""
    out = []
    for t in gguf.GGMLQuantizationType:
        block, size = gguf.GGML_QUANT_SIZES[t]
        try:
            gguf.quants.dequantize(np.zeros((1, size), np.uint8), t)
        except NotImplementedError:
            continue
        out.append(t.name)
    return out


def test_type_tables_agree_with_gguf_py() -> None:
    """The tables a metadata read uses without importing gguf-py are gguf-py's own."""
    theirs = {t.value: (t.name, *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType}
    assert {i: (t.name, t.block, t.type_size) for i, t in GGML_TYPES.items()} == theirs
    assert FILE_TYPES == {t.value: t.name.removeprefix("MOSTLY_").removeprefix("ALL_") for t in gguf.LlamaFileType}
    rope = {v for k, v in gguf.TENSOR_NAMES.items() if k.name.startswith("ROPE_")}
    assert rope == COMPUTED


def _all_types_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    tensors = {}
    for i, name in enumerate(_dequantizable()):
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]][0]
        values = RNG.standard_normal((3, 2 * max(block, 32))).astype(np.float32)
        tensors[f"blk.{i}.{name.lower()}.weight"] = (values, name)
    tensors["blk.0.f64.weight"] = (RNG.standard_normal((2, 4)), "F64")
    tensors["blk.0.i32.weight"] = (np.arange(12, dtype=np.int32).reshape(3, 4), "I32")
    tensors["blk.0.i8.weight"] = (np.arange(8, dtype=np.int8), "I8")
    return write_gguf(tmp_path / "all.gguf", tensors), {n: t for n, (_, t) in tensors.items()}


def test_every_type_reads_like_gguf_py(tmp_path: Path) -> None:
    path, types = _all_types_file(tmp_path)
    ck = load_checkpoint(str(path))
    oracle = gguf.GGUFReader(path)
    ours = {e.name: e.tensor for e in ck.entries}
    assert list(ours) == [t.name for t in oracle.tensors]
    for t in oracle.tensors:
        info = ours[t.name]
        assert info is not None
        assert info.shape == tuple(int(d) for d in reversed(t.shape)), t.name  # GGUF dims innermost first
        assert info.nbytes == int(t.n_bytes) and info.data_offset == int(t.data_offset)
        quantized = t.tensor_type.name not in ("F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64")
        assert (info.dtype == t.tensor_type.name) is quantized
        assert (info.layout == "quantized") is quantized
        if quantized:
            assert info.quant is not None and info.quant.method == "gguf"
    assert sorted({i.dtype for i in ours.values() if i is not None and i.layout == "quantized"}) == sorted(
        n for n in set(types.values()) if n not in ("F32", "F16", "BF16", "F64", "I8", "I32"))


def test_every_type_dequantizes_like_gguf_py_by_block_ranges(tmp_path: Path) -> None:
    path, _ = _all_types_file(tmp_path)
    ck = load_checkpoint(str(path))
    oracle = {t.name: t for t in gguf.GGUFReader(path).tensors}
    with gguf_reader(ck) as reader:
        for e in ck.entries:
            t = e.tensor
            assert t is not None
            o = oracle[e.name]
            plain = o.tensor_type.name in ("F64", "I8", "I16", "I32", "I64")  # gguf-py reads these as they are
            want = np.asarray(o.data if plain else gguf.quants.dequantize(o.data, o.tensor_type)).reshape(-1)
            got = np.asarray(reader.array(t)).reshape(-1)
            np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64), err_msg=e.name)
            # a range that starts and ends inside blocks: only its covering blocks are decoded
            lo, hi = 5, t.numel - 3
            part = np.asarray(reader.read_flat(t, lo, hi)).astype(np.float64)
            np.testing.assert_array_equal(part, want[lo:hi].astype(np.float64), err_msg=e.name)


def test_stats_and_no_nan_read_dequantized_values(tmp_path: Path) -> None:
    values = RNG.standard_normal((4, 64)).astype(np.float32)
    path = write_gguf(tmp_path / "q.gguf", {"blk.0.attn_q.weight": (values, "Q8_0")})
    result = CliRunner().invoke(app, ["inspect", str(path), "--stats", "--format", "json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)["entries"][0]["stats"]
    want = gguf.quants.dequantize(gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0),
                                  gguf.GGMLQuantizationType.Q8_0)
    assert stats["min"] == pytest.approx(float(want.min())) and stats["max"] == pytest.approx(float(want.max()))
    check = CliRunner().invoke(app, ["check", str(path), "--no-nan", "--no-inf"])
    assert check.exit_code == 0, check.output
    show = CliRunner().invoke(app, ["show", str(path), "blk.0.attn_q.weight", "--format", "json"])
    assert show.exit_code == 0, show.output


def test_nan_in_quantized_blocks_fails_check(tmp_path: Path) -> None:
    values = np.ones((2, 32), np.float32)
    path = write_gguf(tmp_path / "nan.gguf", {"blk.0.w.weight": (values, "Q8_0")})
    data = bytearray(path.read_bytes())
    off = gguf.GGUFReader(path).tensors[0].data_offset
    data[off:off + 2] = np.array([np.nan], np.float16).tobytes()  # the first block's f16 scale
    path.write_bytes(bytes(data))
    check = CliRunner().invoke(app, ["check", str(path), "--no-nan"])
    assert check.exit_code == 1, check.output
    assert "blk.0.w.weight" in check.output


def test_metadata_of_every_value_type_reads_like_gguf_py(tmp_path: Path) -> None:
    path = tmp_path / "meta.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    V = gguf.GGUFValueType
    scalars = {"t.u8": (200, V.UINT8), "t.i8": (-5, V.INT8), "t.u16": (60000, V.UINT16), "t.i16": (-300, V.INT16),
               "t.u32": (4_000_000_000, V.UINT32), "t.i32": (-7, V.INT32), "t.f32": (0.5, V.FLOAT32),
               "t.bool": (True, V.BOOL), "t.str": ("héllo", V.STRING), "t.u64": (2**63, V.UINT64),
               "t.i64": (-(2**40), V.INT64), "t.f64": (1.25, V.FLOAT64)}
    for k, (v, vt) in scalars.items():
        w.add_key_value(k, v, vt)
    w.add_array("t.tokens", ["<s>", "</s>", "a"] * 1000)
    w.add_array("t.scores", [0.5, -1.0, 2.0])
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_tensor("x.weight", np.ones(32, np.float32))
    for step in (w.write_header_to_file, w.write_kv_data_to_file, w.write_tensors_to_file, w.close):
        step()
    head = read_header(str(path))
    for k, (v, _) in scalars.items():
        assert head.metadata[k] == v, k
    oracle = gguf.GGUFReader(path)
    assert head.metadata["t.tokens"].values == tuple(oracle.fields["t.tokens"].contents())
    assert head.metadata["t.scores"].values == tuple(oracle.fields["t.scores"].contents())
    nested = head.metadata["t.nested"]
    assert isinstance(nested, GgufArray) and [list(a.values) for a in nested.values] == [[1, 2], [3]]
    table = CliRunner().invoke(app, ["inspect", str(path), "--format", "json"])
    meta = json.loads(table.output)["metadata"]
    assert meta["t.tokens"].startswith("3,000 strings: ['<s>', '</s>', 'a'")


def test_metadata_read_does_not_import_gguf_py(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", {"blk.0.w.weight": (np.ones((2, 32), np.float32), "Q4_0")},
                      {"general.name": "m"})
    code = (f"import sys\nfrom statecli.load import load_checkpoint\nck = load_checkpoint({str(path)!r})\n"
            "assert len(ck.entries) == 1\nassert 'gguf' not in sys.modules, 'gguf imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("alignment", [64, 256])
def test_custom_alignment_is_honoured(tmp_path: Path, alignment: int) -> None:
    tensors = {f"blk.{i}.w.weight": (RNG.standard_normal((1, 32 * (i + 1))).astype(np.float32), "Q8_0")
               for i in range(3)}
    path = write_gguf(tmp_path / "a.gguf", tensors, alignment=alignment)
    head = read_header(str(path))
    assert head.alignment == alignment and head.hidden == ()
    oracle = {t.name: int(t.data_offset) for t in gguf.GGUFReader(path).tensors}
    assert {t.name: head.data_start + t.offset for t in head.tensors} == oracle


def test_split_model_reads_as_one_from_any_part(tmp_path: Path) -> None:
    tensors = {f"blk.{i}.w.weight": (RNG.standard_normal((2, 32)).astype(np.float32), "Q8_0") for i in range(5)}
    write_gguf(tmp_path / "m.gguf", tensors, {"general.name": "split"}, split_max_tensors=2)
    parts = sorted(tmp_path.glob("m-*-of-*.gguf"))
    assert [p.name for p in parts] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for part in parts:
        ck = load_checkpoint(str(part))
        assert [e.name for e in ck.entries] == list(tensors)
        assert ck.files == tuple(str(p) for p in parts)
        assert ck.metadata["general.name"] == "split"
    with gguf_reader(load_checkpoint(str(parts[2]))) as reader:
        ck = load_checkpoint(str(parts[2]))
        last = next(e for e in ck.entries if e.name == "blk.4.w.weight")
        assert last.tensor is not None and last.tensor.source == str(parts[2])
        oracle = gguf.GGUFReader(parts[2]).tensors[-1]
        want = gguf.quants.dequantize(oracle.data, oracle.tensor_type).reshape(-1)
        np.testing.assert_array_equal(np.asarray(reader.array(last.tensor)).reshape(-1), want)


def test_split_model_with_a_missing_part_is_one_error(tmp_path: Path) -> None:
    tensors = {f"blk.{i}.w.weight": (np.ones((2, 32), np.float32), "Q8_0") for i in range(4)}
    write_gguf(tmp_path / "m.gguf", tensors, split_max_tensors=2)
    (tmp_path / "m-00002-of-00002.gguf").unlink()
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "m-00001-of-00002.gguf")])
    assert result.exit_code == 2 and "m-00002-of-00002.gguf" in result.output
    renamed = tmp_path / "renamed.gguf"
    (tmp_path / "m-00001-of-00002.gguf").rename(renamed)
    result = CliRunner().invoke(app, ["inspect", str(renamed)])
    assert result.exit_code == 2 and "-00001-of-00002.gguf" in result.output


def test_kinds_say_gguf_tensor_and_label_computed_tables(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "k.gguf", {"token_embd.weight": (np.ones((2, 32), np.float32), "Q8_0"),
                                            "rope_freqs.weight": (np.ones(16, np.float32), "F32")})
    kinds = {e.name: (e.kind.value, str(e.evidence)) for e in load_checkpoint(str(path)).entries}
    assert kinds["token_embd.weight"][0] == "parameter" and "GGUF tensor" in kinds["token_embd.weight"][1]
    assert kinds["rope_freqs.weight"][0] == "buffer" and "computed" in kinds["rope_freqs.weight"][1]


def test_a_file_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    """The remembered parse is keyed by the header's bytes, not the mtime: a same-size rewrite within
    one mtime tick (a tool editing metadata in place) is read as it now is."""
    path = write_gguf(tmp_path / "m.gguf", {"w.weight": (np.ones(32, np.float32), "F32")}, {"general.name": "aaaa"})
    assert load_checkpoint(str(path)).metadata["general.name"] == "aaaa"
    st = path.stat()
    path.write_bytes(path.read_bytes().replace(b"aaaa", b"bbbb"))
    import os

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_checkpoint(str(path)).metadata["general.name"] == "bbbb"


def test_split_model_header_says_its_parts(tmp_path: Path) -> None:
    tensors = {f"blk.{i}.w.weight": (np.ones((2, 32), np.float32), "Q8_0") for i in range(20)}
    write_gguf(tmp_path / "m.gguf", tensors, split_max_tensors=8)
    part = tmp_path / "m-00002-of-00003.gguf"
    head = CliRunner().invoke(app, ["inspect", str(part)], env={"COLUMNS": "200"}).output.splitlines()[0]
    assert head.startswith(f"{part}  gguf, 3 parts  ") and "data file" not in head and ".metadata" not in head


def test_evidence_is_gguf_tensor_in_the_column_json_and_show(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "e.gguf", {"blk.0.attn_q.weight": (np.ones((2, 32), np.float32), "Q8_0"),
                                            "rope_freqs.weight": (np.ones(16, np.float32), "F32")})
    data = json.loads(CliRunner().invoke(app, ["inspect", str(path), "-f", "json"]).output)
    want = {"blk.0.attn_q.weight": "GGUF tensor", "rope_freqs.weight": "GGUF computed tensor"}
    assert {t["name"]: t["evidence"] for t in data["entries"]} == want
    wide = CliRunner().invoke(app, ["inspect", str(path)], env={"COLUMNS": "200"}).output
    cells = [re.split(r" {2,}", line)[:3] for line in wide.splitlines() if line.startswith(("blk.0.", "rope_"))]
    assert cells == [["blk.0.attn_q.weight", "parameter", "GGUF tensor"], ["rope_freqs.weight", "buffer", "GGUF computed tensor"]]
    # At 80 columns the evidence column is shortened (grid.fit): a format's own label stays whole, never "file"
    quantized = write_gguf(tmp_path / "q.gguf", {f"blk.{i}.attn_q.weight": (np.ones((2, 32), np.float32), "Q8_0")
                                                 for i in range(2)})
    narrow = CliRunner().invoke(app, ["inspect", str(quantized)], env={"COLUMNS": "80"}).output
    assert "blk.0.attn_q.weight  parameter  GGUF tensor  Q8_0" in narrow
    from statecli.render.text import short_evidence  # what a narrower table does to the column's cells

    assert short_evidence("GGUF tensor") == "GGUF tensor" and short_evidence("inferred from name") == "inferred"
    assert short_evidence("not in the model definition") == "not in model"  # never a bare "not"
    assert short_evidence("pickled module") != short_evidence("pickled as nn.Parameter")
    shown = CliRunner().invoke(app, ["show", str(path), "blk.0.attn_q.weight"]).output.splitlines()[1]
    assert shown.startswith("blk.0.attn_q.weight  parameter (GGUF tensor)  ")
