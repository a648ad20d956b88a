"""A config.json beside the checkpoint is evidence for every command that classifies (issue 21): size,
check, the rewrites (strip --non-persistent included), not only inspect; --no-hf-config turns it off
everywhere, --hf-config names one; --model also classifies an EMA copy of the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()
transformers = pytest.importorskip("transformers")


@pytest.fixture
def detr(tmp_path: Path) -> tuple[Path, int]:
    """A tiny DETR: its backbone's frozen BatchNorm holds weight/bias as float *buffers*, which names and
    dtypes alone call parameters. Saved with parameters in fp16 and buffers in fp32."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone=None,
                     backbone_config=ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1],
                                                  layer_type="basic"),
                     d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=4)
    model = DetrForObjectDetection(cfg).eval()
    truth = sum(p.numel() for p in model.parameters())
    for p in model.parameters():
        p.data = p.data.half()
    folder = tmp_path / "detr"
    model.save_pretrained(folder)
    return folder, truth


def test_size_counts_parameters_by_the_config(detr: tuple[Path, int]) -> None:
    folder, truth = detr
    data = json.loads(runner.invoke(app, ["size", str(folder / "model.safetensors"), "-f", "json"]).stdout)
    assert data["parameters"] == truth
    assert all(e["evidence"].startswith("model definition") for e in data["top"])
    blind = json.loads(runner.invoke(app, ["size", str(folder / "model.safetensors"), "-f", "json",
                                           "--no-hf-config"]).stdout)
    # Without the config the kinds are inferred (the frozen-BatchNorm rule now gets this model right too).
    assert all(e["evidence"].startswith("inferred") for e in blind["top"])


def test_check_and_cast_classify_by_the_config(detr: tuple[Path, int], tmp_path: Path) -> None:
    folder, _ = detr
    weights = str(folder / "model.safetensors")
    assert runner.invoke(app, ["check", weights, "--param-dtypes", "float16"]).exit_code == 0
    # Blind, the frozen BatchNorm is decided by inference (ambiguous here: buffers in a safetensors file);
    # the config decides it exactly.
    assert runner.invoke(app, ["check", weights, "--param-dtypes", "float16", "--no-hf-config", "--hf-config",
                               str(folder / "config.json")]).exit_code == 0
    out = tmp_path / "bf16.safetensors"
    got = runner.invoke(app, ["cast", weights, "--dtype", "bfloat16", "--only", "buffers", "-o", str(out)])
    assert got.exit_code == 0, got.stderr
    cast = load_file(str(out))
    frozen = next(k for k in cast if k.endswith("embedder.embedder.normalization.weight"))
    assert cast[frozen].dtype == torch.bfloat16  # a buffer, by the config
    assert cast["class_labels_classifier.weight"].dtype == torch.float16  # a parameter: left alone


def test_strip_non_persistent_uses_the_config(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    transformers.logging.set_verbosity_error()
    model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                 vocab_size=50, max_position_embeddings=16))
    folder = tmp_path / "bert"
    model.save_pretrained(folder)
    # an older save: the (now non-persistent) position_ids were written into the file
    state = load_file(str(folder / "model.safetensors")) | {"embeddings.position_ids": torch.arange(16)[None]}
    save_file(state, str(folder / "model.safetensors"))
    out = tmp_path / "clean.safetensors"
    got = runner.invoke(app, ["strip", str(folder / "model.safetensors"), "--non-persistent", "-o", str(out)])
    assert got.exit_code == 0, got.stderr
    assert "embeddings.position_ids" not in load_file(str(out)) and len(load_file(str(out))) == len(state) - 1
    blind = runner.invoke(app, ["strip", str(folder / "model.safetensors"), "--non-persistent", "--no-hf-config",
                                "-o", str(tmp_path / "x.safetensors")])
    assert blind.exit_code == 2 and "--model" in blind.stderr


NET = '''
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.register_buffer("scale", torch.ones(3))  # a float buffer: inference alone says parameter
'''


@pytest.mark.parametrize("wrapped", [False, True])
def test_model_classifies_an_ema_copy(tmp_path: Path, wrapped: bool) -> None:
    (tmp_path / "net.py").write_text(NET)
    sd = {"lin.weight": torch.ones(3, 3), "lin.bias": torch.ones(3), "scale": torch.ones(3)}
    ema = {("module." + k if wrapped else k): v.clone() for k, v in sd.items()}
    if wrapped:  # torch.optim.swa_utils.AveragedModel's layout
        ema["n_averaged"] = torch.tensor(3)
    torch.save({"model": sd, "model_ema": ema, "epoch": 2}, tmp_path / "train.pt")
    got = runner.invoke(app, ["inspect", str(tmp_path / "train.pt"), "--model", f"{tmp_path / 'net.py'}:Net",
                              "-f", "json"])
    kinds = {(e["group"], e["name"]): (e["kind"], e["evidence"]) for e in json.loads(got.stdout)["entries"]}
    prefix = "model_ema.module." if wrapped else "model_ema."
    assert kinds[(None, "scale")][0] == "buffer"
    assert kinds[("model_ema", prefix + "scale")][0] == "buffer"
    assert kinds[("model_ema", prefix + "scale")][1].startswith("model definition")
    assert kinds[("model_ema", prefix + "lin.weight")][0] == "parameter"


def test_show_takes_the_same_evidence_as_inspect(detr: tuple[Path, int]) -> None:
    weights = str(detr[0] / "model.safetensors")
    name = json.loads(runner.invoke(app, ["inspect", weights, "-f", "json"]).stdout)["entries"][0]["name"]
    seen = json.loads(runner.invoke(app, ["show", weights, name, "-f", "json"]).stdout)["entry"]["evidence"]
    listing = json.loads(runner.invoke(app, ["inspect", weights, "-f", "json"]).stdout)["entries"]
    listed = {e["name"]: e["evidence"] for e in listing}
    assert seen == listed[name] and seen.startswith("model definition")
    blind = json.loads(runner.invoke(app, ["show", weights, name, "-f", "json", "--no-hf-config"]).stdout)["entry"]
    assert blind["evidence"].startswith("inferred")
