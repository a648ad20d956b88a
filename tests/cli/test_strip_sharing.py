"""What `strip` says about removed tensors that share storage: only storage shared between a removed
and a kept tensor stays; sharing inside what is removed (an EMA copy of a tied model) is freed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(64, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 64, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)))


def _training_checkpoint(path: Path) -> Tied:
    torch.manual_seed(0)
    model = Tied()
    ema = copy.deepcopy(model)  # the tie survives the copy: one Parameter under two names
    assert ema.head.weight is ema.embed.weight
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([1, 2])).sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "model_ema": ema.state_dict(), "optimizer": opt.state_dict(), "epoch": 1},
               path)
    return model


def _strip(args: list[str]) -> tuple[str, dict]:
    human = runner.invoke(app, ["strip", *args])
    assert human.exit_code == 0, (human.stdout, human.stderr)
    data = runner.invoke(app, ["strip", *args, "-f", "json", "--dry-run"])
    assert data.exit_code == 0, data.stderr
    return " ".join(human.stdout.split()), json.loads(data.stdout)


def test_sharing_inside_the_removed_ema_is_not_called_shared_with_kept(tmp_path: Path) -> None:
    _training_checkpoint(tmp_path / "ckpt.pt")
    text, data = _strip([str(tmp_path / "ckpt.pt"), "--optimizer", "--ema", "-o", str(tmp_path / "out.pt")])
    embed_bytes = 64 * 16 * 4  # the EMA's head.weight repeats its embedding's storage
    assert "share storage with kept ones" not in text
    assert "share storage among themselves" in text
    assert data["removed_sharing_kept_storage_bytes"] == 0
    assert data["removed_sharing_removed_storage_bytes"] == embed_bytes
    kept = torch.load(tmp_path / "out.pt", weights_only=True)
    assert set(kept) == {"model", "epoch"}
    removed = sum(c["nbytes"] for c in data["changes"] if c["what"] == "removed")
    assert data["saved_bytes"] == removed - embed_bytes  # everything removed is freed, the tie once


def test_a_removed_tensor_on_kept_storage_is_named_as_such(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(Tied().state_dict(), tmp_path / "m.pt")
    text, data = _strip([str(tmp_path / "m.pt"), "--pattern", r"^head\.", "-o", str(tmp_path / "out.pt")])
    assert data["removed_sharing_kept_storage_bytes"] == 64 * 16 * 4 and data["saved_bytes"] == 0
    assert "share storage with kept ones" in text and "among themselves" not in text
