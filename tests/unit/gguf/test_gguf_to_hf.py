"""convert GGUF -> a Hugging Face folder: oracle transformers' own GGUF loading
(`from_pretrained(folder, gguf_file=...)`): the same names and tensors, and a config.json that loads
the same model; for llama (q/k permuted by the converter) and qwen2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_hf import llama_to_gguf, tiny_llama

pytest.importorskip("gguf")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers' GGUF loading needs it
torch = pytest.importorskip("torch")
_NOT_LOADED = {"architectures", "_name_or_path", "_model_name_or_path", "quantization_config", "dtype", "torch_dtype"}


@pytest.mark.parametrize(("arch", "qtype"), [("llama", "Q8_0"), ("llama", "F16"), ("qwen2", "Q8_0")])
def test_hf_folder_holds_what_transformers_loads_from_the_gguf(tmp_path: Path, arch: str, qtype: str) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    g = llama_to_gguf(tiny_llama(tmp_path / "src", arch=arch), tmp_path / "m.gguf", qtype)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["convert", str(g), "-o", f"{out}/", "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    oracle = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32)
    want, got = oracle.state_dict(), load_file(str(out / "model.safetensors"))
    assert set(got) == set(want)
    for k in want:  # F16 tensors are written as stored (float16): the same values as transformers' float32
        assert torch.equal(got[k].float(), want[k]), k
    loaded = AutoModelForCausalLM.from_pretrained(str(out))  # config.json + weights alone
    assert type(loaded) is type(oracle) and loaded.dtype == torch.float32
    a, b = oracle.config.to_dict(), loaded.config.to_dict()
    assert {k: v for k, v in a.items() if k not in _NOT_LOADED} == {k: v for k, v in b.items() if k not in _NOT_LOADED}


def test_hf_folder_without_transformers_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import statecli.formats.gguf.hf as hf

    g = llama_to_gguf(tiny_llama(tmp_path / "src"), tmp_path / "m.gguf", "F32")
    monkeypatch.setattr(hf, "transformers_here", lambda: False)
    r = CliRunner().invoke(app, ["convert", str(g), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and "needs transformers" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_a_head_dim_other_than_hidden_over_heads_comes_from_attention_key_length(tmp_path: Path) -> None:
    """Qwen3-0.6B's shape (head_dim 128, hidden 1024 / 16 heads): transformers' GGUF mapping does not read
    qwen3.attention.key_length and keeps Qwen3Config's default head_dim; statecli fills it from the key, so the
    F32 GGUF diffs equal to its source and converts to a folder that loads the source's exact weights."""
    import json

    from transformers import AutoModelForCausalLM

    src = tiny_llama(tmp_path / "src", arch="qwen3", head_dim=32)  # 4 heads x 32 = 128 q rows, hidden 64
    g = llama_to_gguf(src, tmp_path / "m.gguf", "F32")
    r = CliRunner().invoke(app, ["diff", str(g), str(tmp_path / "src" / "model.safetensors"), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["summary"] == {"removed": 0, "added": 0, "changed": 0, "equal": len(src.state_dict())}
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["convert", str(g), "-o", f"{out}/", "--dtype", "float32"]).exit_code == 0
    loaded = AutoModelForCausalLM.from_pretrained(str(out))
    assert loaded.config.head_dim == 32
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_a_folder_whose_config_cannot_load_its_weights_is_refused_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With statecli's fill-in off, the config's q_proj is 512 rows, the file's 128: convert names both and the
    unread key instead of writing a folder from_pretrained refuses; diff still compares the tensor as stored."""
    import statecli.formats.gguf.hf as hf

    g = llama_to_gguf(tiny_llama(tmp_path / "src", arch="qwen3", head_dim=32), tmp_path / "m.gguf", "F32")
    monkeypatch.setattr(hf, "UNMAPPED", {})
    r = CliRunner().invoke(app, ["convert", str(g), "-o", f"{tmp_path / 'out'}/"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and not (tmp_path / "out" / "config.json").exists(), r.output
    assert "q_proj.weight shape [512, 64]" in r.stderr and "blk.0.attn_q.weight [128, 64]" in r.stderr
    assert "qwen3.attention.key_length=32" in r.stderr
    assert CliRunner().invoke(app, ["diff", str(g), str(tmp_path / "src" / "model.safetensors")]).exit_code == 0
