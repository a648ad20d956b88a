"""`check` per-path overrides on folder checkpoints (issue 21): a sharded folder answers to its folder, its
index and its shards, so the README's `paths = ["*.safetensors"]` covers it, as do `*.index.json` and the
folder's own path; a glob naming none of them leaves it alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "big"
    folder.mkdir(parents=True)
    wmap = {}
    for i in range(2):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({f"layers.{i}.weight": torch.ones(4, 4)}, str(folder / shard))
        wmap[f"layers.{i}.weight"] = shard
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    torch.save({"w": torch.ones(2)}, tmp_path / "models" / "small.pt")
    return folder


def _dtype_rule_paths(tmp_path: Path, glob: str, *paths: str) -> set[str]:
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[check]\nsafe-pickle = false\n[[check.overrides]]\npaths = ["{glob}"]\n'
                     'param-dtypes = ["float16"]\n')
    result = runner.invoke(app, ["check", *paths, "--config", str(rules), "-f", "json"])
    assert result.exit_code in (0, 1), result.output
    return {Path(f["path"]).name for f in json.loads(result.stdout)["findings"] if f["rule"] == "dtypes"}


@pytest.mark.parametrize("glob", ["*.safetensors", "*.index.json", "*/models/big", "big", "*model-00001-of-00002*"])
def test_folder_checkpoint_matches_by_folder_index_or_shard(tmp_path: Path, sharded: Path, glob: str) -> None:
    for given in (str(sharded), str(sharded / "model.safetensors.index.json"), str(tmp_path / "models")):
        assert _dtype_rule_paths(tmp_path, glob, given) == {"model.safetensors.index.json"}, given


def test_glob_naming_nothing_of_the_folder_leaves_it_alone(tmp_path: Path, sharded: Path) -> None:
    assert _dtype_rule_paths(tmp_path, "*.pt", str(tmp_path / "models")) == {"small.pt"}
