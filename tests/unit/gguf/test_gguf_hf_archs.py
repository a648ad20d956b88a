"""convert GGUF -> HF folder and diff GGUF vs safetensors for one architecture per transformers
TensorProcessor that changes tensors (llama's q/k permutation: test_gguf_to_hf.py): each GGUF written as
llama.cpp's converter writes it (tests/gguf_archs.py). Oracle: transformers' own GGUF loading,
`from_pretrained(folder, gguf_file=...)`, then its save_pretrained: the written folder must hold the
same tensors (per-expert for MoE, as saving splits them again), bit for bit, and load the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_archs import EXTRA_KEYS, PROCESSOR, tiny, to_gguf

pytest.importorskip("gguf")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers' GGUF loading needs it
torch = pytest.importorskip("torch")
ARCHS = sorted(PROCESSOR)
ARITHMETIC = {"gemma2", "nemotron", "mamba"}  # the converter computes on values, transformers computes back


@pytest.mark.parametrize("model_type", ARCHS)
def test_hf_folder_equals_transformers_loading_of_the_gguf(tmp_path: Path, model_type: str) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from transformers.core_model_loading import revert_weight_conversion

    model = tiny(tmp_path, model_type)
    g = to_gguf(model, tmp_path / "m.gguf", "Q8_0")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["convert", str(g), "-o", f"{out}/", "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    assert PROCESSOR[model_type] in r.stderr
    # transformers' own loading misses the fields its mapping lacks (Qwen2-MoE's expert widths): handed them
    unread = {a: getattr(model.config, a) for a in EXTRA_KEYS.get(model_type, {}).values()}
    oracle = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32, **unread)
    # what save_pretrained writes of those weights (a gguf-loaded model refuses to be saved, so its step alone, on
    # a model made the ordinary way: the Hub's layout, one tensor per expert)
    plain = AutoModelForCausalLM.from_config(oracle.config)
    plain.load_state_dict(oracle.state_dict())
    want = revert_weight_conversion(plain, plain.state_dict())
    got = load_file(str(out / "model.safetensors"))
    assert set(got) <= set(want)
    for k in set(want) - set(got):  # only a tied head is left out: the model ties it again
        assert any(want[k].data_ptr() == want[j].data_ptr() for j in got), k
    for k, v in got.items():
        assert v.shape == want[k].shape and torch.equal(v, want[k]), k
    loaded = AutoModelForCausalLM.from_pretrained(str(out))  # config.json + weights alone
    for k, v in oracle.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.parametrize("model_type", ARCHS)
def test_f32_gguf_diffs_equal_to_its_safetensors_once_transformers_undoes_the_converter(
        tmp_path: Path, model_type: str) -> None:
    g = to_gguf(tiny(tmp_path, model_type), tmp_path / "m.gguf", "F32")
    r = CliRunner().invoke(app, ["diff", str(g), str(tmp_path / "model.safetensors"), "--format", "json"])
    d = json.loads(r.stdout)
    assert PROCESSOR[model_type] in r.stderr
    assert d["summary"]["added"] == 0, [k["name"] for k in d["keys"] if k["status"] == "added"]
    errs = d["quantization_error"]["tensors"]
    compared = [k["name"] for k in d["keys"] if k["status"] in ("equal", "changed")]
    # nmse None: an all-zero reference (MiniMax's router bias)
    assert len(errs) == len(compared) > 0 and all((e["nmse"] or 0) < 1e-9 for e in errs.values()), errs
    if model_type in ARITHMETIC:  # float32 rounding of (w + 1) - 1 or log(-(-exp(w))): not bit-equal
        assert any(e["nmse"] > 0 for e in errs.values())
    else:  # values only moved (permuted, split, stacked, transposed): every value equal
        assert d["summary"]["changed"] == 0 and all(not e["nmse"] for e in errs.values()), d["summary"]
        only_gguf = {k["name"] for k in d["keys"] if k["status"] == "removed"}
        assert only_gguf == ({"output.weight"} if model_type == "gpt2" else set())  # GPT-2's head: wte, tied in HF


def test_an_expert_saved_under_its_hf_name_counts_in_its_block() -> None:
    """A diff pairs a tensor made of one GGUF tensor under its GGUF name, a stacked expert saved one per
    expert under its HF name: its error belongs to the block `layers.N` names, not outside the blocks."""
    from types import SimpleNamespace

    from statecli.analyses.changes import Sums
    from statecli.analyses.gguf_view import quant_error

    keys = (SimpleNamespace(name="blk.0.attn_q.weight", sums=Sums(aa=4.0, dd=1.0)),
            SimpleNamespace(name="model.layers.0.mlp.experts.3.up_proj.weight", sums=Sums(aa=4.0, dd=3.0)),
            SimpleNamespace(name="token_embd.weight", sums=Sums(aa=2.0, dd=1.0)))
    blocks = quant_error(keys, {k.name: "Q4_K" for k in keys})["blocks"]
    assert set(blocks) == {"blk.0", "(outside blocks)"}
    assert blocks["blk.0"]["nmse"] == 0.5 and blocks["(outside blocks)"]["nmse"] == 0.5


def test_qwen2_moe_expert_widths_come_from_the_metadata_transformers_does_not_read(tmp_path: Path) -> None:
    """transformers' GGUF config mapping leaves moe_intermediate_size/shared_expert_intermediate_size at their
    defaults (1408/5632); statecli fills them from qwen2moe.expert_(shared_)feed_forward_length: the Q8_0 diff
    value-compares every expert of the safetensors (one per expert, down_proj too) and the converted folder loads."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    g = to_gguf(tiny(tmp_path, "qwen2_moe"), tmp_path / "m.gguf", "Q8_0")
    r = CliRunner().invoke(app, ["diff", str(g), str(tmp_path / "model.safetensors"), "--format", "json"])
    assert r.exit_code == 1, r.output  # Q8_0's rounding: values differ
    errs = json.loads(r.stdout)["quantization_error"]["tensors"]
    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        experts = {k for k in f.keys() if ".experts." in k}  # noqa: SIM118 - safe_open has no __iter__
    assert len(experts) == 2 * 4 * 3 and experts <= set(errs)
    assert all(0 < errs[k]["nmse"] < 1e-3 or "down_proj" in k for k in experts), errs  # down: 48 wide, kept F32
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["convert", str(g), "-o", f"{out}/"]).exit_code == 0
    cfg = AutoModelForCausalLM.from_pretrained(str(out)).config
    assert (cfg.moe_intermediate_size, cfg.shared_expert_intermediate_size) == (48, 80)


def test_config_shapes_that_do_not_fit_the_file_are_one_line_naming_tensor_and_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the config transformers builds cannot hold the file's tensors (here: statecli's fill-in turned
    off), convert and diff exit 2 with one line naming the HF tensor, the GGUF tensors and the unread keys."""
    import statecli.formats.gguf.hf as hf

    g = to_gguf(tiny(tmp_path, "qwen2_moe"), tmp_path / "m.gguf", "F32")
    monkeypatch.setattr(hf, "UNMAPPED", {})
    for args in (["convert", str(g), "-o", f"{tmp_path / 'out'}/"], ["diff", str(g), str(tmp_path / "model.safetensors")]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.output
        assert "experts.gate_up_proj shape [4, 2816, 32]" in r.stderr and "blk.0.ffn_gate_exps.weight [4, 48, 32]" in r.stderr
        assert "qwen2moe.expert_feed_forward_length=48" in r.stderr
    assert not (tmp_path / "out").exists()
