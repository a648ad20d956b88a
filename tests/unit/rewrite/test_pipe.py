"""The local fast lane of rewrites (pipe.LocalChunks): the same bytes and losses as a whole-array cast,
a CRC-32 equal to zlib's over everything yielded, and the float8 table equal to the direct
conversion (and to torch) for every float32 pattern class."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from statecli.errors import BadInput
from statecli.io.values import torch_to_numpy
from statecli.rewrite import cast as npcast
from statecli.rewrite import pipe


def test_crc32_combine_matches_zlib() -> None:
    rng = random.Random(7)
    data = rng.randbytes(5000)
    for _ in range(50):
        cut = rng.randrange(len(data) + 1)
        a, b = data[:cut], data[cut:]
        assert pipe.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(data)
    assert pipe.crc32_combine(zlib.crc32(b"abc"), zlib.crc32(b""), 0) == zlib.crc32(b"abc")


def _file(tmp_path: Path, a: np.ndarray, head: int = 24) -> Path:
    path = tmp_path / "t.bin"
    path.write_bytes(b"h" * head + a.tobytes() + b"tail")
    return path


@pytest.mark.parametrize("dst", [None, "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "float64"])
def test_chunks_equal_a_whole_cast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dst: str | None) -> None:
    monkeypatch.setattr(pipe, "CHUNK_BYTES", 4096)  # many chunks, a short last one
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(10_001) * 300).astype(np.float32)
    a[:7] = [np.inf, -np.inf, np.nan, 1e-30, -1e5, 0.0, 1e-42]
    path = _file(tmp_path, a)
    losses = npcast.Losses()
    stream = pipe.LocalChunks(str(path), 24, a.size, "float32", dst, losses if dst else None, checksum=True)
    parts = [bytes(c) for c in stream]  # copied: a chunk's buffer is reused after the next is asked for
    got = b"".join(parts)
    want = a if dst is None else npcast.cast(a, dst)
    assert len(parts) > 2 and got == want.tobytes()
    assert stream.crc32() == zlib.crc32(got)
    if dst is not None and npcast.lossy("float32", dst):
        whole = npcast.Losses()
        npcast.count(whole, a, want, dst)
        assert (losses.overflow, losses.underflow) == (whole.overflow, whole.underflow) and losses.underflow > 0


def test_chunks_past_the_end_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, np.ones(10, dtype=np.float32))
    with pytest.raises(BadInput, match="past the end"):
        list(pipe.LocalChunks(str(path), 24, 100, "float32", None, None, checksum=False))


@pytest.mark.parametrize("dst", ["float8_e4m3fn", "float8_e5m2"])
def test_float8_table_equals_direct_conversion(dst: str) -> None:
    """Every top-16-bit pattern with low bits that decide ties (none, the lowest, the highest, all):
    the table's result is the direct conversion's, bit for bit, and torch's for every non-NaN."""
    high = np.arange(1 << 16, dtype=np.uint32) << 16
    bits = np.concatenate([high | low for low in (0, 1, 0x8000, 0xFFFF)]).astype(np.uint32)
    x = bits.view(np.float32)
    got = npcast.cast(x, dst)
    to = np.empty(x.shape, dtype=got.dtype)
    npcast._astype_into(x, dst, to)
    assert np.array_equal(got.view(np.uint8), to.view(np.uint8))
    want = torch_to_numpy(torch.from_numpy(x.copy()).to(getattr(torch, dst))).view(np.uint8)
    nan = np.isnan(x)
    assert np.array_equal(got.view(np.uint8)[~nan], want[~nan])
    assert np.isnan(got[nan].astype(np.float32)).all()
