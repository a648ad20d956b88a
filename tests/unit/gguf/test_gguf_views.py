"""inspect and size of a GGUF: the header line (file type named as llama.cpp names it), metadata
summarised in tables and whole in JSON, totals by GGML type and by block with bits per weight
(gguf-py's block sizes as the oracle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_files import write_gguf

gguf = pytest.importorskip("gguf")
RNG = np.random.default_rng(3)
TOKENS = [f"tok{i}" for i in range(2000)]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    tensors = {"token_embd.weight": (RNG.standard_normal((4, 256)).astype(np.float32), "Q6_K"),
               "blk.0.attn_q.weight": (RNG.standard_normal((8, 256)).astype(np.float32), "Q4_K"),
               "blk.0.attn_norm.weight": (RNG.standard_normal(256).astype(np.float32), "F32"),
               "blk.1.attn_q.weight": (RNG.standard_normal((8, 256)).astype(np.float32), "Q4_K"),
               "output.weight": (RNG.standard_normal((4, 64)).astype(np.float32), "Q8_0")}
    meta = {"general.name": "tiny", "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
            "llama.block_count": 2, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": TOKENS,
            "tokenizer.ggml.scores": [0.5] * 2000}
    return write_gguf(tmp_path / "tiny.gguf", tensors, meta)


def _bpw(name: str) -> float:
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
    return size * 8 / block


def test_json_has_totals_by_type_and_block_and_whole_metadata(model: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", str(model), "--format", "json"])
    assert result.exit_code == 0, result.output
    g = json.loads(result.output)["gguf"]
    assert g["file_type"].endswith("(Q4_K_M)") and g["architecture"] == "llama" and g["parts"] == 1
    for name in ("Q6_K", "Q4_K", "Q8_0", "F32"):
        assert g["by_type"][name]["bits_per_weight"] == pytest.approx(_bpw(name)), name
    assert g["by_type"]["Q4_K"]["tensors"] == 2 and g["by_type"]["Q4_K"]["params"] == 2 * 8 * 256
    reader = gguf.GGUFReader(model)
    total_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    total_params = sum(int(t.n_elements) for t in reader.tensors)
    assert g["total"]["bits_per_weight"] == pytest.approx(total_bytes * 8 / total_params)
    assert set(g["by_block"]) == {"blk.0", "blk.1", "(outside blocks)"}
    assert g["by_block"]["blk.0"]["types"] == ["F32", "Q4_K"]
    assert g["metadata"]["tokenizer.ggml.tokens"] == TOKENS
    assert g["metadata"]["tokenizer.ggml.tokens"] == list(reader.fields["tokenizer.ggml.tokens"].contents())


def test_table_summarises_arrays_and_lists_all_keys_with_metadata(model: Path) -> None:
    short = CliRunner().invoke(app, ["inspect", str(model)], env={"COLUMNS": "200"})
    assert short.exit_code == 0, short.output
    assert "Q4_K_M" in short.output and "bits/weight" in short.output
    assert "tokenizer.ggml.tokens" not in short.output and "--metadata" in short.output
    full = CliRunner().invoke(app, ["inspect", str(model), "--metadata"], env={"COLUMNS": "200"})
    assert "tokenizer.ggml.tokens" in full.output and "2,000 strings: ['tok0', 'tok1'" in full.output
    assert "tok1999" not in full.output  # a table shows the first few, JSON has them all


def test_size_shows_blocks_with_bits_per_weight(model: Path) -> None:
    result = CliRunner().invoke(app, ["size", str(model)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "by block" in result.output and "blk.1" in result.output and "by GGML type" in result.output
    js = json.loads(CliRunner().invoke(app, ["size", str(model), "--format", "json"]).output)
    assert js["gguf"]["by_block"]["blk.1"]["bits_per_weight"] == pytest.approx(_bpw("Q4_K"))
