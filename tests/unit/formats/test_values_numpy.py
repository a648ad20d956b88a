"""The numpy reader (ValueReader.array / read_flat) returns the same bytes as the torch reader, every dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from statecli.io.values import np_dtype, numpy_readable, ordered_map, same_bytes, torch_to_numpy, value_reader
from statecli.load import load_checkpoint

DTYPES = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "int64", "int32", "int16",
          "int8", "uint8", "bool", "complex64", "complex128"]


def _values(dtype: str) -> torch.Tensor:
    t = torch.linspace(-300, 300, 60, dtype=torch.float64).reshape(6, 10)
    if dtype == "bool":
        return t > 0
    if dtype.startswith(("int", "uint")):
        return (t.abs() if dtype == "uint8" else t).clamp(-100, 100).to(getattr(torch, dtype))
    if dtype.startswith("complex"):
        return torch.complex(t, -t).to(getattr(torch, dtype))
    return t.to(torch.float32).to(getattr(torch, dtype))


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_array_and_read_flat_match_torch(tmp_path: Path, fmt: str) -> None:
    sd = {d: _values(d) for d in DTYPES if fmt == "pt" or not d.startswith("complex")}  # safetensors: no complex
    if fmt == "pt":
        base = torch.arange(100, dtype=torch.float32).reshape(10, 10)
        sd["view_t"] = base.t()  # non-contiguous view of a shared storage
        sd["view_slice"] = base[2:5, 1:7]
        sd["base"] = base
        path = tmp_path / "x.pt"
        torch.save(sd, path)
    else:
        path = tmp_path / "x.safetensors"
        save_file(sd, path)
    ck = load_checkpoint(str(path))
    with value_reader(ck) as r:
        for e in ck.entries:
            info = e.tensor
            assert info is not None and numpy_readable(info)
            want = torch_to_numpy(r.tensor(info))
            got = r.array(info)
            assert got.dtype == np_dtype(info.dtype) and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), e.name
            flat = np.concatenate([r.read_flat(info, lo, min(lo + 7, info.numel)) for lo in range(0, info.numel, 7)])
            assert flat.tobytes() == want.reshape(-1).tobytes(), e.name


def test_same_bytes_and_ordered_map() -> None:
    a = np.frombuffer(bytearray(b"\x01\x02\x03\x04"), dtype=np.uint8)
    assert same_bytes(a, np.frombuffer(bytearray(b"\x01\x02\x03\x04"), dtype=np.uint8))
    assert not same_bytes(a, np.array([1, 2, 3, 5], dtype=np.uint8))
    assert list(ordered_map(lambda lo, hi: (lo, hi), 10, 3, threads=2)) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert list(ordered_map(lambda lo, hi: (lo, hi), 0, 3, threads=2)) == []
