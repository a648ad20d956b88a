"""Tied weights in safetensors outputs: stored once by default (safetensors.torch.save_model's
convention, restored by load_model), every key as a copy with --duplicate-tied (plain load_file,
strict); torch and safetensors are the oracles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_model
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


def _ok(args: list[str]) -> tuple[str, str]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout, result.stderr


def _tied() -> torch.nn.Sequential:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 10, bias=False))
    model[2].weight = model[0].weight
    return model


def _meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def test_default_follows_save_model(tmp_path: Path) -> None:
    torch.save(_tied().state_dict(), tmp_path / "m.pt")
    stdout, _ = _ok(["cast", str(tmp_path / "m.pt"), "--dtype", "half", "-o", str(tmp_path / "m.safetensors"),
                     "-f", "json"])
    oracle = tmp_path / "oracle.safetensors"
    save_model(_tied().half(), str(oracle))
    got = load_file(str(tmp_path / "m.safetensors"))
    assert set(got) == set(load_file(str(oracle))) == {"0.weight", "1.weight", "1.bias"}
    assert _meta(tmp_path / "m.safetensors") == _meta(oracle) | {"format": "pt"} == {"format": "pt", "2.weight": "0.weight"}
    fresh = _tied().half()
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    missing, unexpected = load_model(fresh, str(tmp_path / "m.safetensors"))
    assert not missing and not unexpected
    assert fresh[2].weight is fresh[0].weight and torch.equal(fresh[2].weight, _tied()[0].weight.half())
    assert any("save_model" in n and "2.weight -> 0.weight" in n for n in json.loads(stdout)["notes"])
    with pytest.raises(RuntimeError, match="2.weight"):  # what --duplicate-tied is for
        _tied().half().load_state_dict(got, strict=True)


def test_inspect_lists_stored_tensors_and_names_aliases(tmp_path: Path) -> None:
    save_model(_tied(), str(tmp_path / "m.safetensors"))
    result = runner.invoke(app, ["inspect", str(tmp_path / "m.safetensors"), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert sorted(e["name"] for e in data["entries"]) == ["0.weight", "1.bias", "1.weight"]
    assert any("2.weight -> 0.weight" in n and "alias" in n for n in data["notes"])
    assert data["warnings"] == []


@pytest.mark.parametrize("command", [["cast", "--dtype", "half"], ["convert"], ["strip", "--pattern", "nothing"],
                                     ["move", "--device", "cpu"], ["rename", "--add-prefix", "m."]])
def test_duplicate_tied_loads_strictly_with_load_file(tmp_path: Path, command: list[str]) -> None:
    torch.save(_tied().state_dict(), tmp_path / "m.pt")
    out = tmp_path / "m.safetensors"
    _ok([command[0], str(tmp_path / "m.pt"), *command[1:], "-o", str(out), "--duplicate-tied"])
    got = load_file(str(out))
    if command[0] == "rename":
        got = {k.removeprefix("m."): v for k, v in got.items()}
    fresh = _tied()
    if command[0] == "cast":
        fresh = fresh.half()
    fresh.load_state_dict(got, strict=True)
    assert torch.equal(got["2.weight"], got["0.weight"])
    data = json.loads(_ok(["inspect", str(out), "--format", "json"])[0])
    assert len(data["entries"]) == 4  # both copies are stored tensors


def test_duplicate_tied_round_trip_to_pt_ties_again(tmp_path: Path) -> None:
    torch.save(_tied().state_dict(), tmp_path / "m.pt")
    _ok(["convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.safetensors"), "--duplicate-tied"])
    _ok(["convert", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "back.pt")])
    sd = torch.load(tmp_path / "back.pt", weights_only=True)
    assert sd["2.weight"].untyped_storage().data_ptr() == sd["0.weight"].untyped_storage().data_ptr()


def test_aliases_carried_through_rewrites(tmp_path: Path) -> None:
    save_model(_tied(), str(tmp_path / "m.safetensors"))
    _ok(["rename", str(tmp_path / "m.safetensors"), "--add-prefix", "net.", "-o", str(tmp_path / "r.safetensors")])
    assert _meta(tmp_path / "r.safetensors") == {"format": "pt", "net.2.weight": "net.0.weight"}
    _ok(["cast", str(tmp_path / "m.safetensors"), "--dtype", "bfloat16", "-o", str(tmp_path / "c.safetensors")])
    assert _meta(tmp_path / "c.safetensors") == {"format": "pt", "2.weight": "0.weight"}
    fresh = _tied().to(torch.bfloat16)
    missing, unexpected = load_model(fresh, str(tmp_path / "c.safetensors"))
    assert not missing and not unexpected


def test_legacy_alias_metadata_is_an_alias_not_a_tensor(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "legacy.safetensors"
    save_file({"a.weight": torch.randn(3, 3)}, str(path), metadata={"statecli.aliases": json.dumps({"b.weight": "a.weight"})})
    result = runner.invoke(app, ["inspect", str(path), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert [e["name"] for e in json.loads(result.stdout)["entries"]] == ["a.weight"]
    assert "b.weight -> a.weight" in result.stderr


def test_model_check_accepts_a_tie_left_out(tmp_path: Path) -> None:
    (tmp_path / "defn.py").write_text(
        "import torch\n"
        "def make():\n"
        "    m = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 10, bias=False))\n"
        "    m[2].weight = m[0].weight\n"
        "    return m\n")
    torch.save(_tied().state_dict(), tmp_path / "m.pt")
    _ok(["cast", str(tmp_path / "m.pt"), "--dtype", "half", "-o", str(tmp_path / "m.safetensors"),
         "--model", f"{tmp_path / 'defn.py'}:make"])
    assert set(load_file(str(tmp_path / "m.safetensors"))) == {"0.weight", "1.weight", "1.bias"}
