"""Hugging Face folders as rewrite outputs, and tied weights in safetensors outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def _sd() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"model.embed_tokens.weight": torch.randn(32, 8), "model.layers.0.mlp.weight": torch.randn(8, 8),
            "model.layers.1.mlp.weight": torch.randn(8, 8), "model.norm.weight": torch.ones(8),
            "model.rotary.inv_freq": torch.rand(4), "model.layers.0.step": torch.tensor(3)}


def _hf_folder(root: Path, sharded: bool) -> Path:
    folder = root / "hf"
    folder.mkdir()
    sd = _sd()
    if sharded:
        names = list(sd)
        shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
        for fname, keys in shards.items():
            save_file({k: sd[k] for k in keys}, str(folder / fname), metadata={"format": "pt"})
        wmap = {k: f for f, keys in shards.items() for k in keys}
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    else:
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": "llama", "torch_dtype": "float32", "tie_word_embeddings": True,
              "text_config": {"dtype": "float32"}}
    (folder / "config.json").write_text(json.dumps(config))
    for name, text in {"tokenizer.json": "{}", "tokenizer_config.json": "{}", "generation_config.json": "{}",
                       "special_tokens_map.json": "{}", "vocab.txt": "a\nb\n", "tokenizer.model": "spm"}.items():
        (folder / name).write_text(text)
    (folder / "optimizer.pt").write_bytes(b"not a companion")
    return folder


def test_cast_sharded_hf_folder_writes_hf_folder(tmp_path: Path) -> None:
    src = _hf_folder(tmp_path, sharded=True)
    out = tmp_path / "out"
    _ok(["cast", str(src), "--dtype", "half", "-o", str(out)])
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
                     "model-00002-of-00002.safetensors", "model.safetensors.index.json", "optimizer.pt",
                     "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.txt"]
    assert (out / "optimizer.pt").read_bytes() == b"not a companion"  # every file of the folder is kept
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "float16" and config["text_config"]["dtype"] == "float16"
    assert config["model_type"] == "llama"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    merged: dict[str, torch.Tensor] = {}
    for shard in set(index["weight_map"].values()):
        merged.update(load_file(str(out / shard)))
    sd = _sd()
    assert set(merged) == set(sd) == set(index["weight_map"])
    for k, v in sd.items():
        want = v.half() if v.is_floating_point() else v
        assert merged[k].dtype == want.dtype and torch.equal(merged[k], want), k
    assert (src / "config.json").read_text().count("float32") == 2  # the input is untouched


def test_single_file_hf_folder_and_max_shard_size(tmp_path: Path) -> None:
    src = _hf_folder(tmp_path, sharded=False)
    _ok(["convert", str(src), "-o", str(tmp_path / "one")])
    assert (tmp_path / "one" / "model.safetensors").is_file() and (tmp_path / "one" / "config.json").is_file()
    assert json.loads((tmp_path / "one" / "config.json").read_text())["torch_dtype"] == "float32"  # no cast
    _ok(["cast", str(src), "--dtype", "bfloat16", "-o", str(tmp_path / "many"), "--max-shard-size", "300B"])
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and (tmp_path / "many" / "tokenizer.json").is_file()


def test_hf_output_leaves_tied_keys_out(tmp_path: Path) -> None:
    folder = tmp_path / "tied"
    folder.mkdir()
    emb = torch.randn(16, 4)
    torch.save({"embed.weight": emb, "lm_head.weight": emb, "norm.weight": torch.ones(4)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"model_type": "x", "torch_dtype": "float32"}))
    data = json.loads(_ok(["cast", str(folder), "--dtype", "half", "-o", str(tmp_path / "out"), "-f", "json"]))
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(got) == {"embed.weight", "norm.weight"}  # as save_pretrained: from_pretrained re-ties lm_head
    assert torch.equal(got["embed.weight"], emb.half())
    assert any("save_pretrained" in n and "lm_head.weight -> embed.weight" in n for n in data["notes"])


def _hf_model(name: str) -> tuple[type, object]:
    import transformers as T

    if name == "bert":
        config = T.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, max_position_embeddings=32)
        return T.BertForMaskedLM, config
    config = T.LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=1, intermediate_size=32, max_position_embeddings=32,
                           tie_word_embeddings=True)
    return T.LlamaForCausalLM, config


@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("name", ["bert", "llama"])
def test_from_pretrained_loads_a_cast_folder(tmp_path: Path, name: str, sharded: bool) -> None:
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cls, config = _hf_model(name)
    torch.manual_seed(0)
    model = cls(config).eval()
    model.save_pretrained(tmp_path / "src")
    args = ["cast", str(tmp_path / "src"), "--dtype", "half", "-o", str(tmp_path / "out")]
    _ok(args + (["--max-shard-size", "4KB"] if sharded else []))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "float16"
    loaded, info = cls.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    want = model.half().state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want) and loaded.dtype == torch.float16
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    out_emb, out_head = loaded.get_input_embeddings().weight, loaded.get_output_embeddings().weight
    assert out_emb is out_head or out_emb.data_ptr() == out_head.data_ptr()  # the tie is re-established
