"""convert GGUF -> safetensors: quantized tensors written dequantized (bfloat16 by default, --dtype
otherwise), plain ones as stored; the values are gguf-py's dequantize cast to the dtype. A .pt output
of quantized tensors is refused in one line."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_files import write_gguf

gguf = pytest.importorskip("gguf")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    return write_gguf(tmp_path / "m.gguf", {"blk.0.attn_q.weight": (rng.standard_normal((4, 256)).astype(np.float32), "Q4_K"),
                                            "blk.0.ffn_up.weight": (rng.standard_normal((8, 64)).astype(np.float32), "Q8_0"),
                                            "output_norm.weight": (rng.standard_normal(64).astype(np.float32), "F32")})


@pytest.mark.parametrize(("args", "dtype"), [((), ml_dtypes.bfloat16), (("--dtype", "float32"), np.float32),
                                             (("--dtype", "half"), np.float16)])
def test_convert_writes_dequantized_values(model: Path, tmp_path: Path, args: tuple[str, ...], dtype: type) -> None:
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(app, ["convert", str(model), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    got = load_file(str(out))
    for t in gguf.GGUFReader(model).tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        if t.tensor_type.name == "F32":
            np.testing.assert_array_equal(got[t.name], np.asarray(t.data).reshape(shape))
            continue
        want = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).astype(dtype).reshape(shape)
        assert got[t.name].dtype == np.dtype(dtype) and got[t.name].shape == shape
        np.testing.assert_array_equal(got[t.name].astype(np.float32), want.astype(np.float32), err_msg=t.name)


def test_convert_to_pt_of_quantized_tensors_is_refused(model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["convert", str(model), "-o", str(tmp_path / "out.pt")])
    assert result.exit_code == 2 and "--drop-unsupported" in result.output and "internal error" not in result.output
    assert "convert --dequantize" in result.output  # the way that keeps them, named before the one that drops them
    assert not (tmp_path / "out.pt").exists()
    kept = CliRunner().invoke(app, ["convert", str(model), "-o", str(tmp_path / "deq.pt"), "--dequantize"])
    assert kept.exit_code == 0, kept.output
    assert CliRunner().invoke(app, ["convert", str(model), "-o", str(tmp_path / "deq.safetensors")]).exit_code == 0
    import torch
    from safetensors.torch import load_file as load_torch

    pt, st = torch.load(tmp_path / "deq.pt", weights_only=True), load_torch(str(tmp_path / "deq.safetensors"))
    assert pt.keys() == st.keys() and all(torch.equal(pt[k], st[k]) for k in st)  # the same dequantized values
