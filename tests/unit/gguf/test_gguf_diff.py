"""diff of two GGUFs: metadata keys removed/added/changed (arrays: the first index that differs),
GGML type changes as structure, and dequantized values compared with the usual tolerances (oracle:
gguf-py's GGUFReader + dequantize)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_files import write_gguf

gguf = pytest.importorskip("gguf")
RNG = np.random.default_rng(11)
W = RNG.standard_normal((4, 64)).astype(np.float32)


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    a = write_gguf(tmp_path / "a.gguf", {"blk.0.attn_q.weight": (W, "Q8_0"), "blk.0.attn_k.weight": (W, "Q8_0"),
                                         "output_norm.weight": (W[0], "F32")},
                   {"general.name": "a", "old.key": 1, "tokenizer.ggml.tokens": ["x", "y", "z"]})
    b = write_gguf(tmp_path / "b.gguf", {"blk.0.attn_q.weight": (W + 0.25, "Q8_0"), "blk.0.attn_k.weight": (W, "Q4_0"),
                                         "output_norm.weight": (W[0], "F32")},
                   {"general.name": "b", "new.key": 2, "tokenizer.ggml.tokens": ["x", "Y", "z"]})
    return a, b


def _oracle(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float64).reshape(-1)
            for t in gguf.GGUFReader(path).tensors}


def test_diff_reports_metadata_types_and_dequantized_values(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    result = CliRunner().invoke(app, ["diff", str(a), str(b), "--format", "json"])
    assert result.exit_code == 1, result.output
    d = json.loads(result.output)
    meta = {m["key"]: m for m in d["metadata"]}
    assert meta["general.name"]["status"] == "changed"
    assert meta["old.key"]["status"] == "removed" and meta["new.key"]["status"] == "added"
    assert meta["tokenizer.ggml.tokens"]["first_difference"] == 1
    keys = {k["name"]: k for k in d["keys"]}
    assert keys["blk.0.attn_k.weight"]["changes"]["dtype"] == {"a": "Q8_0", "b": "Q4_0"}
    oa, ob = _oracle(a), _oracle(b)
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight"):
        want = float(np.max(np.abs(oa[name] - ob[name])))
        assert keys[name]["max_abs"] == pytest.approx(want, rel=1e-6), name
    assert keys["output_norm.weight"]["status"] == "equal"


def test_the_same_gguf_is_equal(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path)
    result = CliRunner().invoke(app, ["diff", str(a), str(a)])
    assert result.exit_code == 0, result.output


def test_metadata_alone_makes_two_ggufs_different(tmp_path: Path) -> None:
    a = write_gguf(tmp_path / "a.gguf", {"w.weight": (W, "Q8_0")}, {"general.license": "mit"})
    b = write_gguf(tmp_path / "b.gguf", {"w.weight": (W, "Q8_0")}, {"general.license": "apache-2.0"})
    result = CliRunner().invoke(app, ["diff", str(a), str(b)], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "general.license" in result.output and "apache-2.0" in result.output
