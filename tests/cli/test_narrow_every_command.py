"""Every command's human output in a real pty at 60, 80 and 120 columns (issue 21): no line runs past the edge
and every tensor and module name stays whole; at narrow widths bars shrink or go, --stats figures get a table
of their own whose least important columns go first, a tree puts a leaf's details under its name, and
-v lines and headings fold at words. Checkpoints: a BatchNorm CNN trained with AdamW, a scheduler and an
AveragedModel EMA, a tied transformer with long names, and a bitsandbytes nf4 folder (the dtype cell keeps
its logical dtype, shapes stay whole), and a GGUF whose metadata values are cut to fit, never its keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ..gguf_files import write_gguf
from ..unit.formats import quant_builders as qb
from .test_keep_ema import _trained
from .test_narrow_pty import _in_pty


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("every")
    cnn, ema, opt, sched = _trained()  # AdamW, a scheduler and an AveragedModel EMA
    torch.save({"model": cnn.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": 3}, folder / "train.pt")
    emb = torch.randn(50, 16)
    tied = {"transformer.embeddings.word_embeddings.weight": emb, "lm_head.weight": emb,
            "transformer.encoder.layer.0.attention.self.query.weight": torch.randn(16, 16),
            "transformer.encoder.layer.11.attention.output.LayerNorm.bias": torch.randn(16),
            "transformer.embeddings.position_ids": torch.arange(64)[None]}
    torch.save(tied, folder / "tied.pt")
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in tied.items()}, folder / "tied2.pt")
    bnb = {"model.norm.weight": torch.ones(64, dtype=torch.float16)}  # an nf4 save_pretrained folder (a stored part
    # name is its weight's name + ".quant_state.bitsandbytes__nf4": short names, so that fits 60 columns)
    for i in range(2):
        bnb |= qb.bnb4(f"layers.{i}.up_proj", 256, 64, np.random.default_rng(i))
    qb.save(folder / "nf4" / "model.safetensors", bnb, {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                                         "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True})
    ct = {"model.norm.weight": torch.ones(64, dtype=torch.float16)}  # compressed-tensors pack-quantized, W4 g32
    for i in range(2):
        ct |= {f"layers.{i}.up_proj.weight_packed": torch.zeros(256, 8, dtype=torch.int32),
               f"layers.{i}.up_proj.weight_scale": torch.ones(256, 2, dtype=torch.float16),
               f"layers.{i}.up_proj.weight_shape": torch.tensor([256, 64])}
    qb.save(folder / "ct" / "model.safetensors", ct, {"quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "symmetric": True,
                                                                      "strategy": "group", "group_size": 32}}}})
    write_gguf(folder / "m.gguf", {"token_embd.weight": (np.ones((8, 32), np.float32), "Q8_0")},
               {"llama.attention.layer_norm_rms_epsilon": 1e-6, "llama.context_length": 4096,
                "general.name": "a model name long enough that it cannot fit sixty columns whole"})
    return {"gguf": folder / "m.gguf", "train": folder / "train.pt", "tied": folder / "tied.pt", "tied2": folder / "tied2.pt",
            "nf4": folder / "nf4", "ct": folder / "ct", "out": folder}


NAMES = {"train": ["conv.weight", "bn.running_mean", "bn.num_batches_tracked", "head.bias"],
         "tied": ["transformer.encoder.layer.0.attention.self.query.weight",
                  "transformer.encoder.layer.11.attention.output.LayerNorm.bias", "lm_head.weight"],
         "nf4": ["layers.0.up_proj.weight", "model.norm.weight"]}


TREE_NAMES = {"train": {"conv", "running_mean", "num_batches_tracked", "head", "n_averaged"},
              "tied": {"word_embeddings", "position_ids", "LayerNorm", "query", "lm_head"}}


def _commands(f: dict[str, Path], columns: int) -> list[tuple[list[str], list[str]]]:
    """(argv, names that must appear whole, each the first word of a line)."""
    train, tied, tied2, nf4, out = (str(f[k]) for k in ("train", "tied", "tied2", "nf4", "out"))
    return [
        (["inspect", train], NAMES["train"]), (["inspect", tied], NAMES["tied"]),
        (["inspect", train, "--stats"], NAMES["train"]), (["inspect", tied, "--stats"], NAMES["tied"]),
        (["inspect", tied, "--tree"], []), (["inspect", train, "--tree"], []),
        (["size", train, "--depth", "2"], ["conv", "bn", "head"]),
        (["size", tied, "--depth", "4"], ["transformer.encoder.layer.11"]),
        (["diff", tied, tied2], ["transformer.encoder.layer.0.attention.self.query.weight"]),
        (["diff", tied, tied2, "--by-module", "--depth", "4"], ["transformer.encoder.layer.11"]),
        (["diff", tied, tied2, "-v"], []), (["check", tied, "--no-nan", "--devices", "cpu"], []),
        (["scan", train, tied], []), (["show", tied, NAMES["tied"][1]], []),
        (["cast", train, "--dtype", "half", "-o", f"{out}/half-{columns}.pt"], []),
        (["strip", train, "--optimizer", "--dry-run"], []),
        (["strip", train, "--keep-ema-as-model", "-o", f"{out}/ema-{columns}.pt"], []),
        (["move", tied, "--device", "cpu", "--dry-run"], []),
        (["convert", tied, "-o", f"{out}/tied-{columns}.safetensors"], []),
        (["inspect", nf4], NAMES["nf4"]), (["inspect", nf4, "--stats"], NAMES["nf4"]),
        (["inspect", nf4, "--storage"], NAMES["nf4"]),
        (["inspect", str(f["gguf"])], ["llama.attention.layer_norm_rms_epsilon", "llama.context_length"]),
        (["inspect", str(f["ct"]), "--storage"], ["layers.0.up_proj.weight", "model.norm.weight"]),
    ]  # 24: the test's parameter range


@pytest.mark.parametrize("columns", [60, 80, 120])
@pytest.mark.parametrize("which", range(24))
def test_every_command_fits_and_keeps_names_whole(files: dict[str, Path], columns: int, which: int) -> None:
    for argv, names in _commands(files, columns)[which:which + 1]:
        screen = _in_pty(argv, columns, lines=50)
        shown = "\n".join(screen)
        assert all(len(line) <= columns for line in screen), (argv, shown)
        firsts = {line.split()[0] for line in screen if line.strip()}
        for name in names:
            assert name in firsts, (argv, name, shown)
        if "--tree" in argv:  # module and leaf names whole, each right after its guide
            heads = {line.lstrip("│├└─ ").split()[0] for line in screen if line.lstrip("│├└─ ")}
            want = TREE_NAMES["tied" if argv[1] == str(files["tied"]) else "train"]
            assert want <= heads, (want - heads, shown)
    if "nf4" in argv[1] or argv[1].endswith("ct"):  # shapes whole; the logical dtype stays
        assert "[256, 64]" in shown and (" nf4 " in shown and "bitsandbytes nf4" in shown or " int4 " in shown), shown
    if argv[1].endswith(".gguf"):  # a float32 value as float32's shortest text; a long value cut, keys whole
        assert " 1e-06" in shown and "9.99999" not in shown and "a model name long" in shown, shown
