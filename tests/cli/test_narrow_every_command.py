"""Every command's human output in a real pty at 60, 80 and 120 columns (issue 21): no line runs past the edge
and every tensor and module name stays whole; at narrow widths bars shrink or go, --stats figures get a table
of their own whose least important columns go first, a tree puts a leaf's details under its name, and
-v lines and headings fold at words. Checkpoints: a BatchNorm CNN trained with AdamW, a scheduler and an
AveragedModel EMA, and a tied transformer with long names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
    return {"train": folder / "train.pt", "tied": folder / "tied.pt", "tied2": folder / "tied2.pt",
            "out": folder}


NAMES = {"train": ["conv.weight", "bn.running_mean", "bn.num_batches_tracked", "head.bias"],
         "tied": ["transformer.encoder.layer.0.attention.self.query.weight",
                  "transformer.encoder.layer.11.attention.output.LayerNorm.bias", "lm_head.weight"]}


TREE_NAMES = {"train": {"conv", "running_mean", "num_batches_tracked", "head", "n_averaged"},
              "tied": {"word_embeddings", "position_ids", "LayerNorm", "query", "lm_head"}}


def _commands(f: dict[str, Path], columns: int) -> list[tuple[list[str], list[str]]]:
    """(argv, names that must appear whole, each the first word of a line)."""
    train, tied, tied2, out = (str(f[k]) for k in ("train", "tied", "tied2", "out"))
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
    ]  # 19: the test's parameter range


@pytest.mark.parametrize("columns", [60, 80, 120])
@pytest.mark.parametrize("which", range(19))
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
