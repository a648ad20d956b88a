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
from tests.gguf_archs import PROCESSOR, tiny, to_gguf

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

    g = to_gguf(tiny(tmp_path, model_type), tmp_path / "m.gguf", "Q8_0")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["convert", str(g), "-o", f"{out}/", "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    assert PROCESSOR[model_type] in r.stderr
    oracle = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32)
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
