"""strip --keep-ema-as-model on the EMAs training loops save (issue 21): torch.optim.swa_utils.AveragedModel
(`module.` keys + `n_averaged`), timm's ModelEmaV2 (`module.` keys) and a plain EMA state dict, inside a
{model, ema, optimizer, scheduler, epoch} checkpoint: the output loads into the model with
load_state_dict(strict=True) and holds the EMA's values; an EMA of another model is one clear line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


class ModelEmaV2(nn.Module):
    """timm.utils.ModelEmaV2's layout: the copy is `.module`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(model)


def _trained() -> tuple[Net, AveragedModel, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        model(torch.randn(2, 3, 6, 6)).sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        ema.update_parameters(model)
    return model, ema, opt, sched


def _ema_states(ema: AveragedModel, model: Net) -> dict[str, dict[str, torch.Tensor]]:
    return {"averaged": ema.state_dict(), "timm": ModelEmaV2(ema.module).state_dict(),
            "plain": ema.module.state_dict()}


@pytest.mark.parametrize("kind", ["averaged", "timm", "plain"])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_keep_ema_as_model_loads_strictly(tmp_path: Path, kind: str, suffix: str) -> None:
    model, ema, opt, sched = _trained()
    ema_sd = _ema_states(ema, model)[kind]
    torch.save({"model": model.state_dict(), "ema": ema_sd, "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": 3}, tmp_path / "train.pt")
    out = tmp_path / f"out{suffix}"
    got = runner.invoke(app, ["strip", str(tmp_path / "train.pt"), "--keep-ema-as-model", "-o", str(out)])
    assert got.exit_code == 0, got.output
    if suffix == ".pt":
        state = torch.load(out, weights_only=True)["model"]
    else:
        from safetensors.torch import load_file

        state = load_file(out)
    fresh = Net()
    fresh.load_state_dict(state, strict=True)
    want = ema.module.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in fresh.state_dict().items())
    assert not torch.equal(fresh.head.weight, model.head.weight)  # the EMA's values, not the model's
    if kind != "plain":
        assert "prefix 'module.'" in got.stderr


def test_an_ema_of_another_model_is_one_clear_line(tmp_path: Path) -> None:
    model, _, opt, _ = _trained()
    torch.save({"model": model.state_dict(), "ema": nn.Linear(3, 3).state_dict(), "optimizer": opt.state_dict()},
               tmp_path / "t.pt")
    got = runner.invoke(app, ["strip", str(tmp_path / "t.pt"), "--keep-ema-as-model", "-o", str(tmp_path / "o.pt")])
    assert got.exit_code == 2 and not (tmp_path / "o.pt").exists()
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match the model state" in lines[0] and "missing" in lines[0], got.stderr
    assert "verification" not in got.stderr and "Traceback" not in got.output


def test_a_wrapped_model_and_its_wrapped_ema_keep_their_keys(tmp_path: Path) -> None:
    model, ema, opt, _ = _trained()
    ddp = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from a DistributedDataParallel model
    torch.save({"model": ddp, "ema": ModelEmaV2(ema.module).state_dict(), "optimizer": opt.state_dict()},
               tmp_path / "t.pt")
    got = runner.invoke(app, ["strip", str(tmp_path / "t.pt"), "--keep-ema-as-model", "-o", str(tmp_path / "o.pt")])
    assert got.exit_code == 0, got.output
    state = torch.load(tmp_path / "o.pt", weights_only=True)["model"]
    assert set(state) == set(ddp) and "prefix 'module.'" not in got.stderr
