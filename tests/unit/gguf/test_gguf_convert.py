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
                                            "output_norm.weight": (rng.standard_normal(64).astype(np.float32), "F32")},
                      arch="nonesuch")  # an architecture transformers does not load: GGUF names are kept


@pytest.mark.parametrize(("args", "dtype"), [((), ml_dtypes.bfloat16), (("--dtype", "float32"), np.float32),
                                             (("--dtype", "half"), np.float16)])
def test_convert_writes_dequantized_values(model: Path, tmp_path: Path, args: tuple[str, ...], dtype: type) -> None:
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(app, ["convert", str(model), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    assert result.output.count("GGUF names kept, not Hugging Face's") == 1
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


def test_one_safetensors_file_has_the_hf_folders_names_and_values(tmp_path: Path) -> None:
    """The issue: GGUF -> safetensors is written under HF names, the folder output's model.safetensors
    byte for byte in names and values (q/k permutation undone alike); without transformers, GGUF names
    and one note."""
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    import statecli.formats.gguf.hf as hf
    from tests.gguf_hf import llama_to_gguf, tiny_llama

    g = llama_to_gguf(tiny_llama(tmp_path / "src"), tmp_path / "m.gguf", "Q8_0")
    one, folder = tmp_path / "one.safetensors", tmp_path / "folder"
    for out in (str(one), f"{folder}/"):
        r = CliRunner().invoke(app, ["convert", str(g), "-o", out])
        assert r.exit_code == 0, r.output
    got, want = load_file(str(one)), load_file(str(folder / "model.safetensors"))
    assert list(got) == list(want) and "model.layers.0.self_attn.q_proj.weight" in got
    assert got["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16  # Q8_0 dequantized to bf16
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    assert not (tmp_path / "config.json").exists()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf, "transformers_here", lambda: False)
        r = CliRunner().invoke(app, ["convert", str(g), "-o", str(tmp_path / "plain.safetensors")])
    assert r.exit_code == 0 and r.output.count("GGUF names kept, not Hugging Face's: it needs transformers") == 1
    assert set(load_file(str(tmp_path / "plain.safetensors"))) == {t.name for t in gguf.GGUFReader(g).tensors}
