"""statecli's numpy dequantizers against each owning library's own decompress/dequantize, on files
the libraries wrote (test oracles only: statecli never imports them). Skipped where a library is
not installed (they are heavy: see the quant-test list in .ci/constraints.txt).

Tolerances: the libraries return the model dtype (bfloat16/float16), statecli float32; the product
of a small integer code (or e2m1/nf4 table value) and a bf16/fp16/fp32 scale is exact in float32,
so statecli's values rounded to the library's dtype must equal the library's exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from statecli.io.values import value_reader
from statecli.load import load_checkpoint
from statecli.state import Kind

from . import quant_builders as qb

torch = pytest.importorskip("torch")


def _values(ck: Any, name: str) -> np.ndarray:
    e = next(e for e in ck.entries if e.name == name)
    with value_reader(ck) as r:
        return np.array(r.array(e.tensor))


def _same(ours: np.ndarray, ref: Any) -> None:
    np.testing.assert_array_equal(torch.from_numpy(ours).to(ref.dtype).float().numpy(), ref.float().numpy())


def _tiny_llama() -> Any:
    tr = pytest.importorskip("transformers")
    cfg = tr.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=96, tie_word_embeddings=False)
    torch.manual_seed(0)
    return tr.LlamaForCausalLM(cfg).to(torch.bfloat16)


def _ct_quantize(w: Any, args: Any) -> dict[str, Any]:
    """Scales and zero points computed here, min-max per group (compressed-tensors has no calibration
    step of its own: llm-compressor's observers do this; its docs show scales set by hand)."""
    g = w.float().reshape(w.shape[0], -1, args.group_size)
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
    scale = ((hi - lo) / 15).clamp(min=1e-6).to(torch.bfloat16)
    zp = torch.round(-lo / scale.float() - 8).clamp(-8, 7).to(torch.int8)
    return {"weight": w, "weight_scale": scale, "weight_zero_point": zp}


def test_compressed_tensors_w4a16_model_matches_decompress_and_parameter_count(tmp_path: Path) -> None:
    ct = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.compressors import PackedQuantizationCompressor

    args = ct.QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=32)
    scheme = ct.QuantizationScheme(targets=["Linear"], weights=args)
    model = _tiny_llama()
    state: dict[str, Any] = {}
    refs: dict[str, Any] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name != "lm_head":
            packed = PackedQuantizationCompressor.compress(_ct_quantize(mod.weight.data, args), scheme)
            state |= {f"{name}.{k}": v for k, v in packed.items()}
            refs[f"{name}.weight"] = PackedQuantizationCompressor.decompress(packed, scheme)["weight"]
    quantized = {n.rsplit(".", 1)[0] for n in refs}
    state |= {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[0] not in quantized}
    config = ct.QuantizationConfig(config_groups={"group_0": scheme}, format="pack-quantized", ignore=["lm_head"],
                                   quantization_status="compressed").model_dump(mode="json")
    ck = load_checkpoint(str(qb.save(tmp_path / "m" / "model.safetensors", state, config)))
    params = [e for e in ck.entries if e.kind is Kind.PARAMETER]
    assert sum(e.tensor.numel for e in params) == model.num_parameters()
    head = next(e for e in ck.entries if e.name == "lm_head.weight")
    assert head.tensor.quant is None and head.tensor.dtype == "bfloat16"  # the ignore list: as stored
    q = next(e for e in ck.entries if e.name == "model.layers.0.self_attn.q_proj.weight").tensor
    assert q.dtype == "int4" and q.quant.scheme == "compressed-tensors int4 asym, group 32"
    for name, ref in refs.items():
        _same(_values(ck, name), ref)


def test_compressed_tensors_fp8_and_nvfp4_match_decompress(tmp_path: Path) -> None:
    ct = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.compressors import FloatQuantizationCompressor, NVFP4PackedCompressor

    torch.manual_seed(1)
    w = torch.randn(32, 64, dtype=torch.bfloat16)
    fp8 = ct.QuantizationScheme(targets=["Linear"], weights=ct.QuantizationArgs(num_bits=8, type="float",
                                                                                  strategy="channel"))
    scale = (w.float().abs().amax(1, keepdim=True) / 448).to(torch.bfloat16)
    a = FloatQuantizationCompressor.compress({"weight": w, "weight_scale": scale}, fp8)
    nv = ct.QuantizationScheme(targets=["Linear"], weights=ct.QuantizationArgs(
        num_bits=4, type="float", strategy="tensor_group", group_size=16))
    gs = torch.tensor([448 * 6 / w.float().abs().max()], dtype=torch.float32)
    blk = (w.float().reshape(32, 4, 16).abs().amax(-1) / 6 * gs).to(torch.float8_e4m3fn).to(torch.bfloat16)
    b = NVFP4PackedCompressor.compress({"weight": w, "weight_scale": blk, "weight_global_scale": gs}, nv)
    state = {f"a.{k}": v for k, v in a.items()} | {f"b.{k}": v for k, v in b.items()}
    ck = load_checkpoint(str(qb.save(tmp_path / "model.safetensors", state)))
    _same(_values(ck, "a.weight"), FloatQuantizationCompressor.decompress(a, fp8)["weight"])
    _same(_values(ck, "b.weight"), NVFP4PackedCompressor.decompress(b, nv)["weight"])


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double", [False, True])
def test_bitsandbytes_4bit_matches_dequantize_4bit(tmp_path: Path, quant_type: str, double: bool) -> None:
    """The parts as Params4bit._save_to_state_dict writes them (QuantState.as_dict(packed=True))."""
    F = pytest.importorskip("bitsandbytes.functional")
    torch.manual_seed(2)
    w = torch.randn(48, 64, dtype=torch.float16)
    packed, st = F.quantize_4bit(w, blocksize=64, quant_type=quant_type, compress_statistics=double)
    state = {"l.weight": packed} | {f"l.weight.{k}": v for k, v in st.as_dict(packed=True).items()}
    state["l.bias"] = torch.zeros(48, dtype=torch.float16)
    ck = load_checkpoint(str(qb.save(tmp_path / "m" / "model.safetensors", state,
                                     {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                      "bnb_4bit_quant_type": quant_type, "bnb_4bit_use_double_quant": double})))
    info = next(e for e in ck.entries if e.name == "l.weight").tensor
    assert info.dtype == quant_type and info.shape == (48, 64) and info.quant.compute_dtype == "float16"
    assert sorted(e.name for e in ck.entries) == ["l.bias", "l.weight"]
    ours = _values(ck, "l.weight")
    ref = F.dequantize_4bit(packed, st)
    _same(ours, ref)


def test_bitsandbytes_int8_matches_int8_vectorwise_dequant(tmp_path: Path) -> None:
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(3)
    w = torch.randn(32, 64, dtype=torch.float16)
    lin = bnb.nn.Linear8bitLt(64, 32, has_fp16_weights=False)
    lin.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    lin = lin.to("cpu")
    state = {f"l.{k}": v for k, v in lin.state_dict().items() if v.dim() > 0}
    ck = load_checkpoint(str(qb.save(tmp_path / "model.safetensors", state)))
    ref = bnb.functional.int8_vectorwise_dequant(lin.weight.data, lin.weight.SCB)
    _same(_values(ck, "l.weight"), ref)
    assert json.dumps(next(e for e in ck.entries if e.name == "l.weight").to_dict())


def test_fp8_block_matches_transformers_dequantize(tmp_path: Path) -> None:
    """DeepSeek-style weight + weight_scale_inv (128x128 blocks, ragged edges) against transformers'
    finegrained_fp8._dequantize_fp8_weight in float32: exact (fp8 values times fp32 scales)."""
    fp8 = pytest.importorskip("transformers.integrations.finegrained_fp8")
    t, _ = qb.fp8_block("mlp.down", 300, 200, np.random.default_rng(7))
    ck = load_checkpoint(str(qb.save(tmp_path / "model.safetensors", t)))  # no config: blocks inferred
    info = next(e for e in ck.entries if e.name == "mlp.down.weight").tensor
    assert info.quant.inferred and info.quant.block == (128, 128)
    ref = fp8._dequantize_fp8_weight(t["mlp.down.weight"], t["mlp.down.weight_scale_inv"], [128, 128], torch.float32)
    np.testing.assert_array_equal(_values(ck, "mlp.down.weight"), ref.numpy())


@pytest.mark.parametrize("config", ["Int8WeightOnlyConfig", "Float8WeightOnlyConfig", "int4"])
def test_torchao_subclasses_in_pt_read_inertly_match_dequantize(tmp_path: Path, config: str) -> None:
    """A torchao-quantized state dict saved with torch.save: read without importing torchao (the
    unpickler stubs its classes), one logical weight whose values equal torchao's dequantize()
    ((qdata - zero_point) x per-row or per-group scale: exact once rounded to the bf16 torchao
    returns); scan says needs-trust. "int4" is torchao 0.18's int4 weight-only on CPU:
    IntxWeightOnlyConfig(int4, PerGroup(32)) -> IntxUnpackedToInt8Tensor (Int4WeightOnlyConfig's
    packed Int4Tensor needs CUDA/mslk kernels and cannot be made here)."""
    import subprocess
    import sys

    tq = pytest.importorskip("torchao.quantization")
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32)).to(torch.bfloat16)
    cfg = (tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=tq.PerGroup(32)) if config == "int4"
           else getattr(tq, config)())
    tq.quantize_(model, cfg)
    path = tmp_path / "q.pt"
    torch.save(model.state_dict(), path)
    ref = model.state_dict()["0.weight"].dequantize()
    probe = ("import sys; from statecli.load import load_checkpoint; ck = load_checkpoint(sys.argv[1]); "
             "w = next(e for e in ck.entries if e.name == '0.weight').tensor; "
             "print(w.layout, w.shape, w.quant.method, 'torchao' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["quantized", "(32,", "64)", "torchao", "False"]  # torchao never imported by the read
    ck = load_checkpoint(str(path))
    w = next(e for e in ck.entries if e.name == "0.weight")
    assert w.kind is Kind.PARAMETER and w.tensor.dtype in ("int8", "fp8_e4m3", "int4") and w.tensor.shape == (32, 64)
    assert (config == "int4") == (w.tensor.dtype == "int4" and w.tensor.quant.block == (1, 32))
    _same(_values(ck, "0.weight"), ref)
    from statecli.analyses.scan import scan

    assert str(scan(str(path)).verdict) == "needs-trust"


def test_torchao_safetensors_metadata_form_reads_logical_tensors(tmp_path: Path) -> None:
    """torchao's own safetensors helpers (prototype.safetensors.flatten_tensor_state_dict: parts as
    `m._weight_qdata`..., the class and attributes as header metadata): each weight is one logical
    tensor (int4 group 32, int8 per-channel) whose parts are the stored entries, and its values equal
    the dequantize() of the tensor torchao's unflatten_tensor_state_dict rebuilds (exact in bf16)."""
    tq = pytest.importorskip("torchao.quantization")
    ts = pytest.importorskip("torchao.prototype.safetensors.safetensors_support")
    from safetensors.torch import load_file, save_file

    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.Linear(64, 32)).to(torch.bfloat16)
    tq.quantize_(model[0], tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=tq.PerGroup(32)))
    tq.quantize_(model[1], tq.Int8WeightOnlyConfig())
    data, meta = ts.flatten_tensor_state_dict(model.state_dict())
    path = tmp_path / "model.safetensors"
    save_file(data, str(path), metadata=meta)
    rebuilt, _ = ts.unflatten_tensor_state_dict(load_file(str(path)), meta)
    ck = load_checkpoint(str(path))
    by = {e.name: e.tensor for e in ck.entries}
    assert sorted(by) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    assert (by["0.weight"].dtype, by["0.weight"].quant.block, by["1.weight"].dtype) == ("int4", (1, 32), "int8")
    assert [p for _, p in by["0.weight"].quant.parts] == ["0._weight_qdata", "0._weight_scale", "0._weight_zero_point"]
    for name in ("0.weight", "1.weight"):
        _same(_values(ck, name), rebuilt[name].dequantize())


def test_torchao_safetensors_dequantized_output_loads_as_plain_tensors(tmp_path: Path) -> None:
    """convert --dequantize of torchao's safetensors form: the metadata records the weight as a plain
    tensor ({"_type": "Tensor"}), so torchao's unflatten_tensor_state_dict returns it dense, equal
    to torchao's dequantize(), and nothing is left over (a stale record made it wait for parts)."""
    tq = pytest.importorskip("torchao.quantization")
    ts = pytest.importorskip("torchao.prototype.safetensors.safetensors_support")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from typer.testing import CliRunner

    from statecli.cli import app

    torch.manual_seed(6)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32)).to(torch.bfloat16)
    tq.quantize_(model, tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=tq.PerGroup(32)))
    data, meta = ts.flatten_tensor_state_dict(model.state_dict())
    save_file(data, str(tmp_path / "q.safetensors"), metadata=meta)
    out = tmp_path / "dense.safetensors"
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "q.safetensors"), "--dequantize", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with safe_open(str(out), "pt") as f:
        out_meta = f.metadata()
    dense, leftover = ts.unflatten_tensor_state_dict(load_file(str(out)), out_meta)
    assert not leftover and sorted(dense) == ["0.bias", "0.weight"]
    torch.testing.assert_close(dense["0.weight"], model.state_dict()["0.weight"].dequantize(), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("qtype", ["qint8", "qint4", "qint2", "qfloat8"])
def test_quanto_weights_match_its_dequantize(tmp_path: Path, qtype: str, dtype: str) -> None:
    """optimum-quanto's frozen model, saved as its state_dict in safetensors (what quanto's safe_save
    and transformers write, with quantization_map.json beside): each weight one logical tensor of the
    model's shape, values equal to quanto's own dequantize() exactly in the model dtype, and the
    logical parameter count equal to the unquantized model's. Layer 0 (in 256 > 128) is grouped
    (group 128) and has a bias saying its [out, in] split; layer 1 (in 48) is per-channel."""
    quanto = pytest.importorskip("optimum.quanto")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 48), torch.nn.Linear(48, 16, bias=False)).to(getattr(torch, dtype))
    count = sum(p.numel() for p in model.parameters())
    quanto.quantize(model, weights=getattr(quanto, qtype))
    quanto.freeze(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "quantization_map.json").write_text(json.dumps(quanto.quantization_map(model)))
    ck = load_checkpoint(str(tmp_path / "model.safetensors"))
    for name, mod in (("0.weight", model[0]), ("1.weight", model[1])):
        e = next(e for e in ck.entries if e.name == name)
        assert e.tensor is not None and e.tensor.quant is not None and e.kind is Kind.PARAMETER
        assert e.tensor.shape == tuple(mod.weight.shape) and e.tensor.quant.method == "quanto"
        _same(_values(ck, name), mod.weight.dequantize().detach())
    # quanto's input_scale/output_scale scalars are buffers in its QModule; without the model, names
    # alone cannot tell them from compressed-tensors' input_scale Parameters, so they are left out here.
    assert sum(e.tensor.numel for e in ck.entries if e.kind is Kind.PARAMETER and e.tensor is not None
               and not e.name.endswith(("input_scale", "output_scale"))) == count
