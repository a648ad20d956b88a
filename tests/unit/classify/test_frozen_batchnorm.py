"""Frozen BatchNorm (weight, bias and running statistics all buffers, no num_batches_tracked), as
torchvision's FrozenBatchNorm2d and detection backbones have it, told from torch's BatchNorm by inference
alone; torch's named_parameters()/named_buffers() are the oracle. A BatchNorm saved before torch 0.4.1
also lacks num_batches_tracked: where the file cannot tell the two apart, the evidence says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from statecli.load import load_checkpoint
from statecli.state import Kind

torch = pytest.importorskip("torch")


class FrozenBatchNorm2d(torch.nn.Module):
    """torchvision.ops.FrozenBatchNorm2d, written out: four buffers, no counter."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x: Any) -> Any:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        return x * scale[None, :, None, None] + (self.bias - self.running_mean * scale)[None, :, None, None]


def backbone(frozen_stem: bool, frozen_body: bool) -> Any:
    """A detection-style backbone: stem and body each with BatchNorm trainable or frozen."""
    def bn(n: int, frozen: bool) -> Any:
        return FrozenBatchNorm2d(n) if frozen else torch.nn.BatchNorm2d(n)

    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), bn(4, frozen_stem), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 8, 3), bn(8, frozen_body), torch.nn.Conv2d(8, 8, 1),
                               bn(8, frozen_body), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 2))


def truth(model: Any) -> dict[str, Kind]:
    out = {n: Kind.PARAMETER for n, _ in model.named_parameters()}
    out |= {n: Kind.BUFFER for n, _ in model.named_buffers()}
    assert set(out) == set(model.state_dict())
    return out


def save(model: Any, path: Path, how: str) -> Path:
    sd = model.state_dict()
    if how == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path, _use_new_zipfile_serialization=how == "zip")
    return path


def kinds(path: Path) -> dict[str, tuple[Kind, str]]:
    return {e.name: (e.kind, e.evidence.detail) for e in load_checkpoint(str(path)).entries}


@pytest.mark.parametrize("how", ["zip", "legacy", "safetensors"])
def test_frozen_beside_trainable_batchnorm_is_told_apart(tmp_path: Path, how: str) -> None:
    model = backbone(frozen_stem=True, frozen_body=False)  # torchvision detection: the stem frozen
    want = truth(model)
    got = kinds(save(model, tmp_path / f"m.{how}", how))
    assert {n: k for n, (k, _) in got.items()} == want
    assert "frozen BatchNorm" in got["1.weight"][1] and "ambiguous" not in got["1.weight"][1]
    assert got["4.weight"][0] is Kind.PARAMETER  # torch's BatchNorm keeps parameters


@pytest.mark.parametrize("how", ["zip", "legacy"])
def test_all_frozen_torch_file_is_told_by_its_saved_module_versions(tmp_path: Path, how: str) -> None:
    """state_dict()._metadata names each module's class version: torch's BatchNorm saves 2, a plain
    nn.Module 1, so a .pt of a wholly frozen backbone is exact, without any counter to compare."""
    model = backbone(frozen_stem=True, frozen_body=True)
    got = kinds(save(model, tmp_path / f"m.{how}", how))
    assert {n: k for n, (k, _) in got.items()} == truth(model)
    assert all("ambiguous" not in d for _, d in got.values())


def test_all_frozen_safetensors_is_a_labelled_guess(tmp_path: Path) -> None:
    """DETR's safetensors: every BatchNorm frozen, no version recorded. Read as frozen (a
    safetensors file is never from torch 0.4), and the evidence says the other reading."""
    model = backbone(frozen_stem=True, frozen_body=True)
    got = kinds(save(model, tmp_path / "m.safetensors", "safetensors"))
    assert {n: k for n, (k, _) in got.items()} == truth(model)
    assert "ambiguous" in got["1.weight"][1] and "0.4.1" in got["1.weight"][1]


def _pre_041(model: Any) -> dict[str, Any]:
    """What torch before 0.4.1 saved for a BatchNorm model: no counters and no _metadata."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_batchnorm_from_before_torch_041_keeps_parameters_and_says_ambiguous(tmp_path: Path) -> None:
    model = backbone(frozen_stem=False, frozen_body=False)
    want = truth(model)
    path = tmp_path / "old.pth"
    torch.save(_pre_041(model), path, _use_new_zipfile_serialization=False)  # a plain dict: no _metadata
    got = kinds(path)
    assert {n: k for n, (k, _) in got.items()} == {k: v for k, v in want.items() if k in got}
    assert "ambiguous" in got["1.weight"][1] and "0.4.1" in got["1.weight"][1]
    # torch itself accepts the file into a BatchNorm model: the parameters reading is the loadable one
    sd = torch.load(path, weights_only=True)
    torch.nn.Module.load_state_dict(model, sd, strict=False)


def test_counter_dropped_from_a_versioned_batchnorm_stays_a_parameter(tmp_path: Path) -> None:
    """A recent torch BatchNorm whose counter a script removed: its saved version (2) says torch's
    BatchNorm, so weight and bias are parameters, with no guess."""
    model = backbone(frozen_stem=False, frozen_body=False)
    sd = model.state_dict()
    for k in [k for k in sd if k.endswith("num_batches_tracked")]:
        del sd[k]  # an OrderedDict keeps its _metadata
    torch.save(sd, tmp_path / "m.pt")
    got = kinds(tmp_path / "m.pt")
    assert got["1.weight"][0] is Kind.PARAMETER and got["1.bias"][0] is Kind.PARAMETER
    assert "ambiguous" not in got["1.weight"][1]
