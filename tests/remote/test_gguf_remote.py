"""GGUF behind a URL: the header by a few growing range reads (a 1 GiB file whose header is ~600 KiB
in at most 4 requests, under twice the header's bytes), a split model from any part's URL, and
dequantized values by ranges."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli import app
from statecli.formats.gguf.header import read_header
from statecli.io import source
from tests.gguf_files import kv, raw_gguf, s, tinfo, write_gguf

from .server import GIB, RangeServer

gguf = pytest.importorskip("gguf")
runner = CliRunner()


def _sparse_gguf(path: Path, vocab: int = 40_000) -> int:
    """A 1 GiB GGUF: a vocabulary of `vocab` tokens, one Q4_K tensor whose data is a hole. Its header size."""
    tokens = struct.pack("<IQ", 8, vocab) + b"".join(s(f"token{i}") for i in range(vocab))
    n = (GIB // 144) * 256
    head = raw_gguf([kv("general.architecture", 8, s("llama")), kv("tokenizer.ggml.tokens", 9, tokens)],
                    [tinfo("blk.0.ffn_up.weight", (n,), 12, 0)])
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + n // 256 * 144)
    return len(head)


def test_remote_header_in_a_few_growing_ranges(http: RangeServer, http_root: Path) -> None:
    header = _sparse_gguf(http_root / "big.gguf")
    assert 512 << 10 < header < 1 << 20
    assert runner.invoke(app, ["inspect", http.url("big.gguf")]).exit_code == 0
    assert len(http.log.requests) <= 4, http.log.requests
    assert http.log.bytes_sent < 2 * header
    assert source.STATS.requests == len(http.log.requests)
    local = read_header(str(http_root / "big.gguf"))
    result = runner.invoke(app, ["inspect", http.url("big.gguf"), "--format", "json"])
    d = json.loads(result.output)
    assert d["entries"][0]["shape"] == [local.tensors[0].dims[0]]
    assert len(d["gguf"]["metadata"]["tokenizer.ggml.tokens"]) == 40_000
    from statecli.formats.gguf import read as gguf_read

    source.clear_cache()
    gguf_read._CACHE.clear()
    source.STATS.reset()
    verbose = runner.invoke(app, ["inspect", http.url("big.gguf"), "-v"])
    assert 0 < source.STATS.requests <= 4
    assert f"{source.STATS.requests} request(s), {source.STATS.bytes:,} bytes" in verbose.stderr


def test_remote_split_model_and_values(http: RangeServer, http_root: Path) -> None:
    rng = np.random.default_rng(5)
    tensors = {f"blk.{i}.w.weight": (rng.standard_normal((2, 64)).astype(np.float32), "Q8_0") for i in range(4)}
    write_gguf(http_root / "m.gguf", tensors, split_max_tensors=2)
    url = http.url("m-00002-of-00002.gguf")
    result = runner.invoke(app, ["inspect", url, "--stats", "--format", "json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert [e["name"] for e in d["entries"]] == list(tensors)
    oracle = gguf.GGUFReader(http_root / "m-00001-of-00002.gguf").tensors[0]
    want = gguf.quants.dequantize(oracle.data, oracle.tensor_type)
    assert d["entries"][0]["stats"]["max"] == pytest.approx(float(want.max()))
