"""Quantized weights read as logical tensors (formats/quant): scheme from the config or inferred,
the parts grouped into one parameter with its logical shape, type, stored bytes and bits per
weight, and dequantized values equal to the layout's reference math (exact: small integer codes
times float16/float32 scales are exact in float32)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from statecli.analyses.stats_pass import stats_for
from statecli.io.values import value_reader
from statecli.load import load_checkpoint
from statecli.state import Kind

from . import quant_builders as qb

pytest.importorskip("torch")


def _entry(ck, name):  # noqa: ANN001, ANN202
    return next(e for e in ck.entries if e.name == name)


def _values(ck, name) -> np.ndarray:  # noqa: ANN001
    e = _entry(ck, name)
    with value_reader(ck) as r:
        return np.array(r.array(e.tensor))


def test_gptq_act_order_is_one_int4_parameter_with_exact_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t, w = qb.gptq("layers.0.q_proj", 64, 256, 32, rng, act_order=True)
    import torch

    t["layers.0.q_proj.bias"] = torch.zeros(64, dtype=torch.float16)
    path = qb.save(tmp_path / "m" / "model.safetensors", t,
                   {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": True, "sym": False})
    ck = load_checkpoint(str(path))
    names = [e.name for e in ck.entries]
    assert names.count("layers.0.q_proj.weight") == 1 and not any("qweight" in n or "g_idx" in n for n in names)
    e = _entry(ck, "layers.0.q_proj.weight")
    info = e.tensor
    assert info.dtype == "int4" and info.shape == (64, 256) and info.layout == "quantized"
    assert e.kind is Kind.PARAMETER
    assert info.quant.scheme == "GPTQ int4 asym, group 32, act-order" and not info.quant.inferred
    stored = sum(v.numel() * v.element_size() for k, v in t.items() if not k.endswith("bias"))
    assert info.nbytes == stored
    assert info.quant.bits_per_weight(info.nbytes, info.numel) == pytest.approx(stored * 8 / (64 * 256))
    assert [r for r, _ in info.quant.parts] == ["qweight", "qzeros", "scales", "g_idx"]
    np.testing.assert_array_equal(_values(ck, "layers.0.q_proj.weight"), w.astype(np.float32))
    assert _entry(ck, "layers.0.q_proj.bias").tensor.quant is None  # not a part


def test_gptq_without_config_is_inferred_from_shapes(tmp_path: Path) -> None:
    t, w = qb.gptq("fc", 32, 128, 64, np.random.default_rng(1))
    ck = load_checkpoint(str(qb.save(tmp_path / "model.safetensors", t)))
    q = _entry(ck, "fc.weight").tensor.quant
    assert q.inferred and q.scheme == "GPTQ int4, group 64 (inferred)" and q.group_size == 64
    assert any("inferred from tensor names" in n for n in ck.notes)
    np.testing.assert_array_equal(_values(ck, "fc.weight"), w.astype(np.float32))


def test_awq_gemm_layout_and_interleaved_order(tmp_path: Path) -> None:
    t, w = qb.awq("mlp.up", 48, 128, 64, np.random.default_rng(2))
    ck = load_checkpoint(str(qb.save(tmp_path / "m" / "model.safetensors", t,
                                     {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True,
                                      "version": "gemm"})))
    info = _entry(ck, "mlp.up.weight").tensor
    assert info.shape == (48, 128) and info.quant.method == "awq" and info.quant.scheme == "AWQ int4 asym, group 64"
    np.testing.assert_array_equal(_values(ck, "mlp.up.weight"), w.astype(np.float32))


def test_fp8_block_scales(tmp_path: Path) -> None:
    t, w = qb.fp8_block("attn.o", 200, 300, np.random.default_rng(3))
    ck = load_checkpoint(str(qb.save(tmp_path / "m" / "model.safetensors", t,
                                     {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]})))
    info = _entry(ck, "attn.o.weight").tensor
    assert info.dtype == "fp8_e4m3" and info.shape == (200, 300) and info.quant.block == (128, 128)
    assert info.quant.scheme == "FP8 fp8 e4m3, block 128x128"
    np.testing.assert_array_equal(_values(ck, "attn.o.weight"), w.astype(np.float32))


def test_mxfp4_experts_match_transformers_conversion(tmp_path: Path) -> None:
    """Against transformers' own convert_moe_packed_tensors (the loader's dequantization), exact:
    e2m1 codes times powers of two are exact in bfloat16 and float32."""
    mx = pytest.importorskip("transformers.integrations.mxfp4")
    import torch

    t = qb.mxfp4("model.layers.0.mlp.experts.gate_up_proj", 2, 48, 64, np.random.default_rng(4))
    ck = load_checkpoint(str(qb.save(tmp_path / "m" / "model.safetensors", t, {"quant_method": "mxfp4"})))
    info = _entry(ck, "model.layers.0.mlp.experts.gate_up_proj").tensor
    assert info.shape == (2, 64, 48) and info.dtype == "mxfp4"
    assert info.quant.bits_per_weight(info.nbytes, info.numel) == pytest.approx(4.25)
    ref = mx.convert_moe_packed_tensors(t["model.layers.0.mlp.experts.gate_up_proj_blocks"],
                                        t["model.layers.0.mlp.experts.gate_up_proj_scales"], dtype=torch.float32)
    np.testing.assert_array_equal(_values(ck, "model.layers.0.mlp.experts.gate_up_proj"), ref.numpy())


def test_stats_stream_rows_of_dequantized_values(tmp_path: Path) -> None:
    """inspect --stats reads a quantized tensor chunk by chunk, through the same dequantizer."""
    t, w = qb.gptq("fc", 64, 256, 32, np.random.default_rng(5))
    ck = load_checkpoint(str(qb.save(tmp_path / "model.safetensors", t)))
    e = _entry(ck, "fc.weight")
    st = stats_for(ck, [e])["fc.weight"]
    w32 = w.astype(np.float32)
    assert st.note is None and st.numel == w.size
    assert st.min == pytest.approx(float(w32.min())) and st.max == pytest.approx(float(w32.max()))
    assert st.mean == pytest.approx(float(w32.astype(np.float64).mean()), rel=1e-9, abs=1e-12)
    with value_reader(ck) as r:  # an unaligned element range decodes the rows it spans
        np.testing.assert_array_equal(r.read_flat(e.tensor, 300, 1000), w32.reshape(-1)[300:1000])


def test_shapes_that_fit_no_layout_stay_as_stored(tmp_path: Path) -> None:
    import torch

    t = {"x.qweight": torch.zeros(4, 5, dtype=torch.int32), "x.qzeros": torch.zeros(1, 3, dtype=torch.int32),
         "x.scales": torch.zeros(1, 7, dtype=torch.float16)}
    ck = load_checkpoint(str(qb.save(tmp_path / "model.safetensors", t)))
    assert sorted(e.name for e in ck.entries) == ["x.qweight", "x.qzeros", "x.scales"]


def test_bad_g_idx_is_one_clear_error(tmp_path: Path) -> None:
    import torch

    from statecli.errors import BadInput

    t, _ = qb.gptq("fc", 32, 128, 64, np.random.default_rng(6))
    t["fc.g_idx"] = torch.full((128,), 99, dtype=torch.int32)
    ck = load_checkpoint(str(qb.save(tmp_path / "model.safetensors", t)))
    with pytest.raises(BadInput, match="g_idx"):
        _values(ck, "fc.weight")


def test_unreadable_quant_state_leaves_bnb_parts_as_stored(tmp_path: Path) -> None:
    import torch

    blob = torch.frombuffer(bytearray(b"{not json"), dtype=torch.uint8)
    t = {"l.weight": torch.zeros(8, 1, dtype=torch.uint8), "l.weight.absmax": torch.ones(1),
         "l.weight.quant_map": torch.zeros(16), "l.weight.quant_state.bitsandbytes__nf4": blob}
    ck = load_checkpoint(str(qb.save(tmp_path / "model.safetensors", t)))
    assert _entry(ck, "l.weight").tensor.quant is None
    assert json.dumps([e.name for e in ck.entries])  # listed as stored, nothing raised


def test_quanto_layout_named_by_config_and_odd_shapes_stay_as_stored(tmp_path: Path) -> None:
    """transformers' QuantoConfig (quant_method "quanto", weights "int4") names the scheme (not
    inferred); packed codes [ceil(n/2), c] with scale/shift [n, 1] read row by row as the 4-bit
    codes of rows i and i + n/2 (quanto's pack_weights; the values are checked against quanto in
    test_quant_oracles); a shift of another shape fits no layout and stays as stored."""
    import torch

    codes = np.arange(5 * 8, dtype=np.uint8).reshape(5, 8) % 16
    packed = np.zeros((3, 8), np.uint8)
    packed[:3] |= codes[:3]
    packed[:2] |= codes[3:] << 4
    scale, shift = torch.full((5, 1), 0.5, dtype=torch.float16), torch.full((5, 1), 1.0, dtype=torch.float16)
    t = {"a.weight._data._data": torch.from_numpy(packed), "a.weight._scale": scale, "a.weight._shift": shift,
         "b.weight._data._data": torch.from_numpy(packed.copy()), "b.weight._scale": scale.clone(),
         "b.weight._shift": shift[:4].clone()}
    ck = load_checkpoint(str(qb.save(tmp_path / "model.safetensors", t, {"quant_method": "quanto", "weights": "int4"})))
    a = _entry(ck, "a.weight")
    assert (a.tensor.dtype, a.tensor.shape, a.tensor.quant.scheme) == ("int4", (5, 8), "quanto int4, per-channel")
    np.testing.assert_array_equal(_values(ck, "a.weight"), codes.astype(np.float32) * 0.5 - 1.0)
    assert {"b.weight._data._data", "b.weight._scale", "b.weight._shift"} <= {e.name for e in ck.entries}
