"""A DCP training checkpoint ({model, optimizer, epoch}) reads as one, and converts back like torch's
own dcp_to_torch_save: containers found, epoch and param_groups intact."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app
from statecli.load import load_checkpoint
from statecli.state import Kind, Role

runner = CliRunner()


@pytest.fixture(scope="module")
def dcp_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    import torch.distributed.checkpoint as dcp

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sd = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 7}
    folder = tmp_path_factory.mktemp("dcp") / "ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(sd, storage_writer=dcp.FileSystemWriter(str(folder)), no_dist=True)
    return folder, sd


def test_containers_are_found(dcp_dir: tuple[Path, dict]) -> None:
    folder, sd = dcp_dir
    ck = load_checkpoint(str(folder))
    assert ck.container == "model"
    roles = {c.name: c.role for c in ck.containers}
    assert roles == {"model": Role.MODEL, "optimizer": Role.OPTIMIZER, "epoch": Role.METADATA}
    model_keys = {e.name for e in ck.entries if e.group == ""}
    assert model_keys == set(sd["model"])
    assert all(e.kind == Kind.OPTIMIZER for e in ck.entries if e.group == "optimizer" and e.tensor is not None)
    epoch = next(e for e in ck.entries if e.group == "epoch")
    assert epoch.value == 7


def test_key_model_lists_tensors_not_containers(dcp_dir: tuple[Path, dict]) -> None:
    folder, sd = dcp_dir
    data = json.loads(runner.invoke(app, ["inspect", str(folder), "--key", "model", "-f", "json"]).stdout)
    assert {c["name"] for c in data["containers"]} == {"model", "optimizer", "epoch"}
    assert {e["name"] for e in data["entries"] if e["group"] is None} == set(sd["model"])


def test_convert_round_trip_matches_torch(dcp_dir: tuple[Path, dict], tmp_path: Path) -> None:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder, _ = dcp_dir
    ours, theirs = tmp_path / "ours.pt", tmp_path / "theirs.pt"
    result = runner.invoke(app, ["convert", str(folder), "-o", str(ours)])
    assert result.exit_code == 0, result.stdout + result.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp_to_torch_save(str(folder), str(theirs))
    a = torch.load(ours, weights_only=True)
    b = torch.load(theirs, weights_only=False)
    assert a["epoch"] == b["epoch"] == 7
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, v in b["model"].items():
        assert torch.equal(a["model"][k], v)
    for i, st in b["optimizer"]["state"].items():
        for name, v in st.items():
            assert torch.equal(a["optimizer"]["state"][i][name], v)
