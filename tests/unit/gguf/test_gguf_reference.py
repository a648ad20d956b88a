"""diff of a GGUF against the safetensors it was converted from: names mapped by gguf-py's
TensorNameMap, and the quantization error per tensor and per block as NMSE and SNR (oracle: numpy on
gguf-py's dequantized values against the reference)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_files import write_gguf

gguf = pytest.importorskip("gguf")


def test_gguf_against_its_safetensors_reports_nmse_and_snr(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    hf = {"model.embed_tokens.weight": rng.standard_normal((16, 256)).astype(np.float32),
          "model.layers.0.mlp.up_proj.weight": rng.standard_normal((32, 256)).astype(np.float32),
          "model.layers.1.mlp.up_proj.weight": rng.standard_normal((32, 256)).astype(np.float32),
          "model.norm.weight": rng.standard_normal(256).astype(np.float32)}
    save_file(hf, str(tmp_path / "ref.safetensors"))
    names = {"model.embed_tokens.weight": ("token_embd.weight", "Q8_0"),
             "model.layers.0.mlp.up_proj.weight": ("blk.0.ffn_up.weight", "Q4_0"),
             "model.layers.1.mlp.up_proj.weight": ("blk.1.ffn_up.weight", "Q8_0"),
             "model.norm.weight": ("output_norm.weight", "F32")}
    q = write_gguf(tmp_path / "q.gguf", {g: (hf[n], t) for n, (g, t) in names.items()})
    result = CliRunner().invoke(app, ["diff", str(tmp_path / "ref.safetensors"), str(q), "--format", "json"])
    assert result.exit_code == 1, result.output
    d = json.loads(result.stdout)
    # the note says how names were paired: gguf-py's TensorNameMap, or transformers' map where it loads the GGUF
    assert "TensorNameMap" in result.stderr or "transformers' GGUF name map" in result.stderr
    assert d["summary"]["removed"] == 0 and d["summary"]["added"] == 0  # every name paired
    err = d["quantization_error"]
    deq = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float64).reshape(-1)
           for t in gguf.GGUFReader(q).tensors}
    for hf_name, (g, _) in names.items():
        ref = hf[hf_name].astype(np.float64).reshape(-1)
        nmse = float(np.sum((deq[g] - ref) ** 2) / np.sum(ref ** 2))
        assert err["tensors"][g]["nmse"] == pytest.approx(nmse, rel=1e-6, abs=1e-12), g
        want = -10 * math.log10(nmse) if nmse else None  # exact (the F32 norm): no SNR
        assert err["tensors"][g]["snr_db"] == (pytest.approx(want, rel=1e-6) if want else None)
    # Q4_0 costs more than Q8_0: the per-block view tells which block
    assert err["blocks"]["blk.0"]["snr_db"] < err["blocks"]["blk.1"]["snr_db"]


def test_block_error_is_over_quantized_tensors_and_text_lists_each_tensor(tmp_path: Path) -> None:
    """A block's unquantized F32 norm (exact, large) would dominate ||a||^2 and make the block look ~10 dB
    better than its only quantized tensor: the block figure is that tensor's, and the text lists every tensor."""
    rng = np.random.default_rng(3)
    hf = {"model.layers.0.mlp.up_proj.weight": rng.standard_normal((32, 256)).astype(np.float32),
          "model.layers.0.post_attention_layernorm.weight": (rng.standard_normal(256) * 20).astype(np.float32),
          "model.norm.weight": rng.standard_normal(256).astype(np.float32)}
    save_file(hf, str(tmp_path / "ref.safetensors"))
    q = write_gguf(tmp_path / "q.gguf", {"blk.0.ffn_up.weight": (hf["model.layers.0.mlp.up_proj.weight"], "Q4_0"),
                                         "blk.0.ffn_norm.weight": (hf["model.layers.0.post_attention_layernorm.weight"], "F32"),
                                         "output_norm.weight": (hf["model.norm.weight"], "F32")})
    args = ["diff", str(tmp_path / "ref.safetensors"), str(q)]
    err = json.loads(CliRunner().invoke(app, [*args, "--format", "json"]).stdout)["quantization_error"]
    tensor = err["tensors"]["blk.0.ffn_up.weight"]
    assert tensor["type"] == "Q4_0" and err["tensors"]["blk.0.ffn_norm.weight"]["type"] is None
    assert err["blocks"]["blk.0"] == {"nmse": tensor["nmse"], "snr_db": tensor["snr_db"]}
    assert set(err["blocks"]) == {"blk.0"} and err["blocks_over"] == "quantized tensors"  # no quantized tensor outside
    text = CliRunner().invoke(app, args, env={"COLUMNS": "80"}).stdout.splitlines()
    assert all(len(line) <= 80 for line in text), text
    assert "quantization error by block (quantized tensors only)" in text
    rows = {line.split()[0]: line.split()[1:] for line in text[text.index("quantization error by tensor (type -: "
                                                                          "not quantized)") + 2:] if line[:1] != "d"}
    assert rows["blk.0.ffn_up.weight"] == ["Q4_0", f"{tensor['nmse']:.3g}", f"{tensor['snr_db']:.1f}"]
    assert rows["blk.0.ffn_norm.weight"] == rows["output_norm.weight"] == ["-", "0", "-"]


def test_tensors_transformers_rebuilds_keep_their_ggml_type(tmp_path: Path) -> None:
    """Review: llama's attn_q/attn_k (q/k rows permuted back by transformers' processor) were listed as "not
    quantized" and left out of their block's figure, though stored Q8_0 like the other 2-D weights."""
    pytest.importorskip("transformers")
    from tests.gguf_hf import llama_to_gguf, tiny_llama

    model = tiny_llama(tmp_path / "src")
    g = llama_to_gguf(model, tmp_path / "m.gguf", "Q8_0")
    out = CliRunner().invoke(app, ["diff", str(g), str(tmp_path / "src" / "model.safetensors"), "-f", "json"])
    tensors = json.loads(out.stdout)["quantization_error"]["tensors"]
    permuted = [n for n in tensors if "attn_q" in n or "attn_k" in n or "q_proj" in n or "k_proj" in n]
    assert permuted and all(tensors[n]["type"] == "Q8_0" for n in permuted), {n: tensors[n]["type"] for n in permuted}
    two_d = [n for n, p in model.state_dict().items() if p.dim() == 2]
    assert sum(t["type"] == "Q8_0" for t in tensors.values()) == len(two_d)
