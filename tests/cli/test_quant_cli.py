"""Quantized checkpoints through the commands: inspect/size count logical parameters and bits per
weight, rewrites keep packed integers and scales byte for byte, convert keeps the scheme and its
config, and convert --dequantize writes a folder transformers' from_pretrained loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli.app import app
from tests.unit.formats import quant_builders as qb

torch = pytest.importorskip("torch")
runner = CliRunner()
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False, "sym": True}


def _gptq_folder(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    t, _ = qb.gptq("model.layers.0.mlp.up", 64, 128, 32, np.random.default_rng(0))
    t2, _ = qb.gptq("model.layers.1.mlp.up", 64, 128, 32, np.random.default_rng(1))
    t |= t2 | {"model.norm.weight": torch.ones(128, dtype=torch.float16)}
    qb.save(tmp_path / "in" / "model.safetensors", t, GPTQ)
    return tmp_path / "in", t


def _run(*args: str) -> Any:
    result = runner.invoke(app, list(args), env={"GITHUB_ACTIONS": "false", "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def test_inspect_json_counts_logical_parameters_and_bits_per_weight(tmp_path: Path) -> None:
    folder, t = _gptq_folder(tmp_path)
    d = json.loads(_run("inspect", str(folder), "--format", "json").stdout)
    w = next(e for e in d["entries"] if e["name"] == "model.layers.0.mlp.up.weight")
    assert (w["kind"], w["dtype"], w["shape"], w["layout"]) == ("parameter", "int4", [64, 128], "quantized")
    parts = {p["role"]: p for p in w["quant"]["parts"]}
    assert set(parts) == {"qweight", "qzeros", "scales", "g_idx"}
    stored = sum(v.numel() * v.element_size() for k, v in t.items() if k.startswith("model.layers.0."))
    assert w["nbytes"] == stored == sum(p["nbytes"] for p in parts.values())
    q = d["quantization"]
    assert q["quantized"]["numel"] == 2 * 64 * 128
    assert q["quantized"]["bits_per_weight"] == pytest.approx(2 * stored * 8 / (2 * 64 * 128), abs=1e-4)
    assert q["parameters"]["numel"] == 2 * 64 * 128 + 128  # what the unquantized model has
    assert list(q["by_module"]) == ["model.layers.*.mlp.up"]
    size = json.loads(_run("size", str(folder), "--format", "json").stdout)
    assert size["parameters"] == 2 * 64 * 128 + 128 and size["quantization"] == q


def test_inspect_storage_lists_the_parts_under_the_weight(tmp_path: Path) -> None:
    folder, _ = _gptq_folder(tmp_path)
    out = _run("inspect", str(folder), "--storage").stdout
    assert "model.layers.0.mlp.up.qweight" in out and "GPTQ int4 sym, group 32" in out
    assert "model.layers.0.mlp.up.qweight" not in _run("inspect", str(folder)).stdout


def _tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_cast_and_strip_leave_packed_parts_bit_identical(tmp_path: Path) -> None:
    folder, t = _gptq_folder(tmp_path)
    res = _run("cast", str(folder / "model.safetensors"), "--dtype", "float32", "-o", str(tmp_path / "c.safetensors"))
    assert "bit-identical" in res.output
    out = _tensors(tmp_path / "c.safetensors")
    assert out["model.norm.weight"].dtype == torch.float32
    for k, v in t.items():
        if k != "model.norm.weight":  # float16 scales too: never cast
            assert out[k].dtype == v.dtype and bytes(out[k].numpy().tobytes()) == bytes(v.numpy().tobytes())
    _run("strip", str(folder / "model.safetensors"), "--pattern", r"layers\.1\.", "-o", str(tmp_path / "s.safetensors"))
    assert sorted(_tensors(tmp_path / "s.safetensors")) == sorted(k for k in t if "layers.1." not in k)


def test_convert_keeps_scheme_and_config(tmp_path: Path) -> None:
    folder, t = _gptq_folder(tmp_path)
    _run("convert", str(folder), "-o", str(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"] == GPTQ
    out = _tensors(tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(out[k], v) for k, v in t.items())
    d = json.loads(_run("inspect", str(tmp_path / "out"), "--format", "json").stdout)
    assert d["quantization"]["by_scheme"].keys() == {"GPTQ int4 sym, group 32"}


def test_dequantize_writes_a_folder_from_pretrained_loads(tmp_path: Path) -> None:
    """compressed-tensors W4A16 tiny Llama -> convert --dequantize --dtype bf16 -> from_pretrained;
    its weights equal compressed-tensors' own decompress (exact in bf16: see test_quant_oracles)."""
    tr = pytest.importorskip("transformers")
    ct = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.compressors import PackedQuantizationCompressor

    cfg = tr.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=96, tie_word_embeddings=False,
                         architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    model = tr.LlamaForCausalLM(cfg).to(torch.bfloat16)
    scheme = ct.QuantizationScheme(targets=["Linear"], weights=ct.QuantizationArgs(
        num_bits=4, type="int", symmetric=True, strategy="group", group_size=32))
    state: dict[str, Any] = {}
    ref: dict[str, Any] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name != "lm_head":
            w = mod.weight.data
            s = (w.float().reshape(w.shape[0], -1, 32).abs().amax(-1) / 7).to(torch.bfloat16)
            packed = PackedQuantizationCompressor.compress({"weight": w, "weight_scale": s}, scheme)
            state |= {f"{name}.{k}": v for k, v in packed.items()}
            ref[f"{name}.weight"] = PackedQuantizationCompressor.decompress(packed, scheme)["weight"]
    state |= {k: v for k, v in model.state_dict().items() if k not in ref}
    config = model.config.to_dict() | {"quantization_config": ct.QuantizationConfig(
        config_groups={"group_0": scheme}, format="pack-quantized", ignore=["lm_head"]).model_dump(mode="json")}
    src = tmp_path / "ct"
    qb.save(src / "model.safetensors", state)
    (src / "config.json").write_text(json.dumps(config))
    _run("convert", str(src), "-o", str(tmp_path / "dense"), "--dequantize", "--dtype", "bf16")
    assert "quantization_config" not in json.loads((tmp_path / "dense" / "config.json").read_text())
    loaded = tr.LlamaForCausalLM.from_pretrained(str(tmp_path / "dense"))
    assert loaded.num_parameters() == model.num_parameters()
    sd = loaded.state_dict()
    for name, w in ref.items():
        assert sd[name].dtype == torch.bfloat16 and torch.equal(sd[name], w)


def _check(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["check", *args, "--format", "json"], env={"GITHUB_ACTIONS": "false"})
    return result.exit_code, json.loads(result.stdout)


def test_check_bits_per_weight_quantization_and_logical_dtypes(tmp_path: Path) -> None:
    folder, _ = _gptq_folder(tmp_path)  # int4 group 32 with fp16 scales and packed zeros: 5.125 bits/weight
    assert _check(str(folder), "--bits-per-weight-max", "6")[0] == 0
    code, d = _check(str(folder), "--bits-per-weight-max", "4.5")
    assert code == 1 and "5.1" in d["findings"][-1]["reason"]
    assert _check(str(folder), "--quantization", "gptq")[0] == 0
    assert _check(str(folder), "--quantization", "awq,bitsandbytes")[0] == 1
    assert _check(str(folder), "--param-dtypes", "int4,float16")[0] == 0
    assert _check(str(folder), "--param-dtypes", "float16")[0] == 1


def test_check_storage_dtypes_match_the_stored_parts_not_the_logical_type(tmp_path: Path) -> None:
    """--storage-dtypes sees the GPTQ parts as stored (int32 qweight/qzeros/g_idx, fp16 scales):
    int4, the logical type --param-dtypes matches, is no stored dtype."""
    folder, _ = _gptq_folder(tmp_path)
    assert _check(str(folder), "--storage-dtypes", "int32,float16")[0] == 0
    code, d = _check(str(folder), "--storage-dtypes", "int4,float16")
    reason = d["findings"][-1]["reason"]
    assert code == 1 and d["findings"][-1]["rule"] == "storage-dtypes" and ".qweight (int32)" in reason


def test_check_quantization_names_unquantized_linear_weights_outside_the_ignore_list(tmp_path: Path) -> None:
    t, _ = qb.gptq("model.layers.0.mlp.up", 64, 128, 32, np.random.default_rng(0))
    t |= {"model.layers.0.mlp.down.weight": torch.zeros(64, 10, dtype=torch.float16),
          "lm_head.weight": torch.zeros(10, 64, dtype=torch.float16),
          "model.embed_tokens.weight": torch.zeros(10, 128, dtype=torch.float16)}
    path = qb.save(tmp_path / "a" / "model.safetensors", t, GPTQ)
    code, d = _check(str(path), "--quantization", "gptq")
    reason = d["findings"][-1]["reason"]
    assert code == 1 and "model.layers.0.mlp.down.weight" in reason
    assert "embed_tokens" not in reason and "lm_head" not in reason  # the head: transformers' default skip
    qb.save(tmp_path / "b" / "model.safetensors", t, GPTQ | {"modules_to_not_convert": ["down"]})
    code, d = _check(str(tmp_path / "b" / "model.safetensors"), "--quantization", "gptq")
    # an explicit list replaces transformers' default: the head is then named like any other weight
    assert code == 1 and "lm_head.weight" in d["findings"][-1]["reason"]
    qb.save(tmp_path / "c" / "model.safetensors", t, GPTQ | {"modules_to_not_convert": ["down", "lm_head"]})
    assert _check(str(tmp_path / "c" / "model.safetensors"), "--quantization", "gptq")[0] == 0


def test_check_quantization_passes_a_default_model_whose_output_head_transformers_left_unquantized(
        tmp_path: Path) -> None:
    """transformers' quantizers keep the output head (lm_head) unquantized unless the config names its own
    modules to skip (get_keys_to_not_convert): a default GPTQ/bitsandbytes model passes the rule."""
    t, _ = qb.gptq("model.layers.0.mlp.up", 64, 128, 32, np.random.default_rng(0))
    t |= {"lm_head.weight": torch.zeros(10, 64, dtype=torch.float16)}
    code, d = _check(str(qb.save(tmp_path / "model.safetensors", t, GPTQ)), "--quantization", "gptq")
    assert code == 0 and "output head lm_head.weight unquantized" in d["findings"][-1]["reason"]


def test_check_no_nan_reads_dequantized_values(tmp_path: Path) -> None:
    t, _ = qb.gptq("fc", 32, 128, 32, np.random.default_rng(0))
    t["fc.scales"][1, 3] = float("nan")  # one group of one output channel: 32 NaN weights
    code, d = _check(str(qb.save(tmp_path / "model.safetensors", t)), "--no-nan")
    assert code == 1 and "fc.weight: 32 NaN" in d["findings"][-1]["reason"]


def test_diff_against_the_unquantized_source_reports_nmse_snr_and_max_error(tmp_path: Path) -> None:
    """Per tensor and per module, from the dequantized values: NMSE = ||q-s||^2/||s||^2,
    SNR = -10 log10(NMSE), computed here in float64 from the two arrays."""
    t0, w0 = qb.gptq("model.layers.0.mlp.up", 64, 128, 32, np.random.default_rng(0))
    t1, w1 = qb.gptq("model.layers.1.mlp.up", 64, 128, 32, np.random.default_rng(1))
    qb.save(tmp_path / "q" / "model.safetensors", t0 | t1, GPTQ)
    rng = np.random.default_rng(2)
    src = {n: (w + rng.normal(0, sd, w.shape)).astype(np.float32)
           for n, w, sd in (("model.layers.0.mlp.up.weight", w0, 1e-3), ("model.layers.1.mlp.up.weight", w1, 1e-2))}
    qb.save(tmp_path / "s" / "model.safetensors", {k: torch.from_numpy(v) for k, v in src.items()})
    res = runner.invoke(app, ["diff", str(tmp_path / "s"), str(tmp_path / "q"), "--format", "json", "--by-module"])
    d = json.loads(res.stdout)
    by_key = {k["name"]: k for k in d["keys"]}
    for name, w in (("model.layers.0.mlp.up.weight", w0), ("model.layers.1.mlp.up.weight", w1)):
        s, q = src[name].astype(np.float64), w.astype(np.float32).astype(np.float64)
        nmse = ((q - s) ** 2).sum() / (s ** 2).sum()
        assert by_key[name]["nmse"] == pytest.approx(nmse, rel=1e-6)
        assert by_key[name]["snr_db"] == pytest.approx(-10 * np.log10(nmse), rel=1e-6)
        assert by_key[name]["max_abs"] == pytest.approx(np.abs(q - s).max(), rel=1e-6)
    mods = {m["module"]: m for m in d["modules"]}
    assert mods["model.layers.1"]["snr_db"] < mods["model.layers.0"]["snr_db"]  # the layer that lost most
    assert "SNR dB" in runner.invoke(app, ["diff", str(tmp_path / "s"), str(tmp_path / "q"), "--by-module"],
                                     env={"COLUMNS": "200"}).stdout


def _i32(*shape: int) -> Any:
    return torch.zeros(*shape, dtype=torch.int32)


HOSTILE = {  # parts whose shapes, dtypes or values do not fit their layout
    "gptq zero-width scales": {"x.qweight": _i32(4, 8), "x.qzeros": _i32(1, 1), "x.scales": torch.zeros(1, 0)},
    "awq zero scales": {"x.qweight": _i32(4, 1), "x.qzeros": _i32(1, 1), "x.scales": torch.zeros(0, 0)},
    "gptq g_idx out of range": {"x.qweight": _i32(4, 8), "x.qzeros": _i32(1, 1), "x.scales": torch.zeros(1, 8),
                                "x.g_idx": torch.full((32,), -5, dtype=torch.int32)},
    "ct zero-size shape": {"x.weight_packed": _i32(0, 4), "x.weight_scale": torch.zeros(0, 1),
                           "x.weight_shape": torch.tensor([0, 32])},
    "ct shape lies": {"x.weight_packed": _i32(2, 4), "x.weight_scale": torch.zeros(2, 1),
                      "x.weight_shape": torch.tensor([2, 10**12])},
    "fp8 scales do not tile": {"x.weight": torch.zeros(4, 4, dtype=torch.float8_e4m3fn),
                               "x.weight_scale_inv": torch.zeros(3, 5)},
    "mxfp4 scales short": {"e_blocks": torch.zeros(1, 2, 1, 16, dtype=torch.uint8),
                           "e_scales": torch.zeros(1, 2, 2, dtype=torch.uint8)},
    "bnb absmax short": {"l.weight": torch.zeros(8, 1, dtype=torch.uint8), "l.weight.absmax": torch.zeros(0),
                         "l.weight.quant_map": torch.zeros(16),
                         "l.weight.quant_state.bitsandbytes__nf4": torch.frombuffer(bytearray(json.dumps(
                             {"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [4, 4]}).encode()),
                             dtype=torch.uint8)},
    "bnb8 SCB wrong length": {"l.weight": torch.zeros(4, 4, dtype=torch.int8), "l.SCB": torch.zeros(3)},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_parts_that_do_not_fit_give_one_clear_line_never_a_traceback(tmp_path: Path, case: str) -> None:
    path = qb.save(tmp_path / "model.safetensors", HOSTILE[case])
    for args in (["inspect", str(path), "--stats"], ["inspect", str(path), "--format", "json"], ["size", str(path)]):
        r = runner.invoke(app, args, env={"GITHUB_ACTIONS": "false"})
        assert r.exit_code in (0, 2), (args, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, repr(r.exception))
        if r.exit_code == 2:
            assert "model.safetensors" in r.output and len(r.output.strip().splitlines()) == 1


def test_torchao_pt_rewrites_refuse_the_subclass_unless_dequantized(tmp_path: Path) -> None:
    tq = pytest.importorskip("torchao.quantization")
    model = torch.nn.Sequential(torch.nn.Linear(64, 32)).to(torch.bfloat16)
    tq.quantize_(model, tq.Int8WeightOnlyConfig())
    torch.save(model.state_dict(), tmp_path / "q.pt")
    r = runner.invoke(app, ["convert", str(tmp_path / "q.pt"), "-o", str(tmp_path / "o.safetensors")])
    assert r.exit_code == 2 and "0.weight" in r.output and not (tmp_path / "o.safetensors").exists()
    _run("convert", str(tmp_path / "q.pt"), "-o", str(tmp_path / "d.safetensors"), "--dequantize")
    out = _tensors(tmp_path / "d.safetensors")["0.weight"]
    assert out.dtype == torch.bfloat16 and torch.equal(out, model.state_dict()["0.weight"].dequantize())


NET = '''
import torch
class Up(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(128, 64, bias=False)
class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = Up()
class Inner(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Layer(), Layer()])
        self.norm = torch.nn.LayerNorm(128, bias=False)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.model = Inner()
'''


def test_load_report_calls_a_quantized_weight_for_a_float_layer_expected_not_a_cast(tmp_path: Path) -> None:
    """A GPTQ weight against the float model it was quantized from is the quantizer loader's business:
    the report says so and suggests no cast; a plain float16 -> float32 difference still reads as a cast."""
    folder, _ = _gptq_folder(tmp_path)
    (tmp_path / "net.py").write_text(NET)
    d = json.loads(_run("inspect", str(folder / "model.safetensors"), "--model", f"{tmp_path / 'net.py'}:Net",
                        "-f", "json").stdout)
    lines = {line["problem"]: line for line in d["load_report"]}
    quant = lines["quantized"]
    assert quant["key"] == "(2 tensors)" and not quant["blocking"] and quant["fix"] is None
    assert "GPTQ int4 sym, group 32" in quant["explanation"] and "float32" in quant["explanation"]
    assert "cast" not in quant["explanation"].replace("no cast", "")
    assert lines["dtype differs"]["key"] == "model.norm.weight" and "cast" in lines["dtype differs"]["explanation"]
    assert d["loads_strictly"]


def test_dequantize_report_names_the_scheme_not_a_cast(tmp_path: Path) -> None:
    """convert --dequantize says what it did: "dequantized <scheme> -> <dtype>", in the human line and
    in JSON's changes (what: dequantized), never "cast int4 -> ..." as if packed integers were cast."""
    folder, _ = _gptq_folder(tmp_path)
    out = _run("convert", str(folder), "-o", str(tmp_path / "d1"), "--dequantize", "--dtype", "bf16").stdout
    assert "dequantized 2 weight(s): GPTQ int4 sym, group 32 -> bfloat16" in " ".join(out.split())
    assert "int4 ->" not in out and "cast " not in out
    d = json.loads(_run("convert", str(folder), "-o", str(tmp_path / "d2"), "--dequantize", "--dtype", "bf16",
                        "--format", "json").stdout)
    rows = [c for c in d["changes"] if c["name"].startswith("model.layers.")]
    assert {(c["what"], c["detail"]) for c in rows} == {("dequantized", "GPTQ int4 sym, group 32 -> bfloat16")}
    assert len(rows) == 2


def test_rename_moves_a_quantized_weights_parts_with_it(tmp_path: Path) -> None:
    """rename --strip-prefix of a GPTQ file renames each weight's stored parts as the weight
    (model.layers.0.mlp.up.qweight -> layers.0.mlp.up.qweight), bytes unchanged; a rename its parts
    cannot follow (the ".weight" tail alone) is one clear error, exit 2, nothing written."""
    folder, t = _gptq_folder(tmp_path)
    _run("rename", str(folder / "model.safetensors"), "--strip-prefix", "model.", "-o", str(tmp_path / "r.safetensors"))
    out = _tensors(tmp_path / "r.safetensors")
    assert out.keys() == {k.removeprefix("model.") for k in t}
    assert all(torch.equal(out[k.removeprefix("model.")], v) for k, v in t.items())
    result = runner.invoke(app, ["rename", str(folder / "model.safetensors"), "--rename", r"\.weight$=.w", "-o",
                                 str(tmp_path / "bad.safetensors")], env={"GITHUB_ACTIONS": "false", "COLUMNS": "200"})
    assert result.exit_code == 2 and "cannot rename its stored part" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "bad.safetensors").exists()


def test_rename_of_torchao_safetensors_renames_its_metadata_records(tmp_path: Path) -> None:
    """torchao's safetensors form keeps one header record per logical name and a tensor_names list:
    after rename --add-prefix, the records and tensor_names carry the new names, so torchao's own
    unflatten_tensor_state_dict rebuilds every weight under its new name, the quantized one equal to
    the input's dequantize() (before this, the rename was refused)."""
    tq = pytest.importorskip("torchao.quantization")
    ts = pytest.importorskip("torchao.prototype.safetensors.safetensors_support")
    from safetensors import safe_open
    from safetensors.torch import save_file

    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.Linear(64, 32)).to(torch.bfloat16)
    tq.quantize_(model[0], tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=tq.PerGroup(32)))
    data, meta = ts.flatten_tensor_state_dict(model.state_dict())
    save_file(data, str(tmp_path / "ao.safetensors"), metadata=meta)
    _run("rename", str(tmp_path / "ao.safetensors"), "--add-prefix", "model.", "-o", str(tmp_path / "r.safetensors"))
    with safe_open(str(tmp_path / "r.safetensors"), "pt") as f:
        meta2 = f.metadata()
    assert json.loads(meta2["tensor_names"]) == ["model." + n for n in json.loads(meta["tensor_names"])]
    rebuilt, left = ts.unflatten_tensor_state_dict(_tensors(tmp_path / "r.safetensors"), meta2)
    assert not left and set(rebuilt) == {"model.0.weight", "model.0.bias", "model.1.weight", "model.1.bias"}
    assert torch.equal(rebuilt["model.0.weight"].dequantize(), model[0].weight.dequantize())
