"""diff and size against values computed with torch on generated pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.analyses.diff import diff
from statecli.cli import app
from statecli.load import load_checkpoint

runner = CliRunner()


@pytest.fixture
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"enc.weight": torch.randn(64, 32), "enc.bias": torch.randn(64), "dec.weight": torch.randn(32, 64),
            "bn.running_var": torch.rand(64) + 0.5, "bn.num_batches_tracked": torch.tensor(7)}


def _diff_json(a: Path, b: Path, *args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["diff", str(a), str(b), "--format", "json", *args])
    return result.exit_code, json.loads(result.stdout)


def test_identical_and_cross_format_are_equal(tmp_path: Path, weights: dict) -> None:
    torch.save(weights, tmp_path / "a.pt")
    torch.save(weights, tmp_path / "b.pt")
    save_file(weights, str(tmp_path / "a.safetensors"))
    for other in ("b.pt", "a.safetensors"):
        code, data = _diff_json(tmp_path / "a.pt", tmp_path / other)
        assert code == 0 and data["equal"]
        assert data["summary"] == {"removed": 0, "added": 0, "changed": 0, "equal": len(weights)}


def test_perturbed_copy_matches_torch(tmp_path: Path, weights: dict) -> None:
    b = {k: v.clone() for k, v in weights.items()}
    b["enc.weight"][0, :5] += torch.tensor([1e-7, 1e-3, 2e-3, 0.0, 5.0])
    torch.save(weights, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    rtol, atol = 1e-4, 1e-6
    code, data = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt", "--rtol", str(rtol), "--atol", str(atol))
    assert code == 1 and not data["equal"]
    keys = {k["name"]: k for k in data["keys"]}
    x, y = weights["enc.weight"].double(), b["enc.weight"].double()
    d = (x - y).abs()
    assert keys["enc.weight"]["status"] == "changed"
    assert keys["enc.weight"]["max_abs"] == pytest.approx(float(d.max()))
    assert keys["enc.weight"]["max_rel"] == pytest.approx(float((d / y.abs()).max()))
    assert keys["enc.weight"]["mismatched"] == int((~torch.isclose(x, y, rtol=rtol, atol=atol)).sum())
    assert keys["enc.bias"]["status"] == "equal"
    # A loose tolerance makes the same pair equal.
    code, data = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt", "--atol", "10")
    assert code == 0


def test_structure_changes(tmp_path: Path, weights: dict) -> None:
    b = dict(weights)
    b["enc.bias"] = weights["enc.bias"].half()
    b["dec.weight"] = torch.randn(16, 64)
    del b["bn.running_var"]
    b["new.weight"] = torch.zeros(2)
    torch.save(weights, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    code, data = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt")
    keys = {k["name"]: k for k in data["keys"]}
    assert code == 1
    assert keys["bn.running_var"]["status"] == "removed" and keys["new.weight"]["status"] == "added"
    assert keys["enc.bias"]["changes"]["dtype"] == {"a": "float32", "b": "float16"}
    assert keys["enc.bias"]["compared_as"] == "float32"
    assert keys["dec.weight"]["changes"]["shape"] == {"a": [32, 64], "b": [16, 64]}
    code, data = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt", "--no-values", "--only-changed")
    assert all(k["status"] != "equal" for k in data["keys"]) and "max_abs" not in json.dumps(data["keys"])


def test_dtype_cast_copy_compared_in_common_dtype(tmp_path: Path, weights: dict) -> None:
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in weights.items()}
    torch.save(weights, tmp_path / "a.pt")
    torch.save(half, tmp_path / "b.pt")
    _, data = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt")
    k = next(k for k in data["keys"] if k["name"] == "enc.weight")
    ref = (weights["enc.weight"].double() - half["enc.weight"].float().double()).abs().max()
    assert k["compared_as"] == "float32"
    assert k["max_abs"] == pytest.approx(float(ref))


def test_renamed_prefix_is_suggested_and_applied(tmp_path: Path, weights: dict) -> None:
    torch.save(weights, tmp_path / "a.pt")
    torch.save({"module." + k: v for k, v in weights.items()}, tmp_path / "b.pt")
    code, data = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt", "--no-values")
    assert code == 1 and any("--strip-prefix module." in h for h in data["hints"])
    code, data = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt", "--strip-prefix", "module.")
    assert code == 0
    code, _ = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt", "--add-prefix-a", "module.")
    assert code == 0


@pytest.mark.parametrize("equal_nan", [False, True])
def test_nan_handling_follows_allclose(tmp_path: Path, equal_nan: bool) -> None:
    a = {"x": torch.tensor([1.0, float("nan"), float("inf"), 2.0])}
    b = {"x": torch.tensor([1.0, float("nan"), float("inf"), 2.0 + 1e-9])}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    args = ["--equal-nan"] if equal_nan else []
    code, data = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt", *args)
    expected = torch.allclose(a["x"], b["x"], equal_nan=equal_nan)
    assert data["equal"] == expected and code == (0 if expected else 1)
    assert data["keys"][0]["mismatched"] == int((~torch.isclose(a["x"], b["x"], equal_nan=equal_nan)).sum())


def test_sharded_vs_single_file_equal(tmp_path: Path, weights: dict) -> None:
    save_file(weights, str(tmp_path / "single.safetensors"))
    names = list(weights)
    folder = tmp_path / "sharded"
    folder.mkdir()
    wmap = {}
    for i, part in enumerate((names[:2], names[2:])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: weights[k] for k in part}, str(folder / fname))
        wmap.update({k: fname for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    code, data = _diff_json(tmp_path / "single.safetensors", folder)
    assert code == 0 and data["equal"]


def test_diff_core_api(tmp_path: Path, weights: dict) -> None:
    torch.save(weights, tmp_path / "a.pt")
    torch.save(weights, tmp_path / "b.pt")
    seen: list[tuple[int, int]] = []
    r = diff(load_checkpoint(str(tmp_path / "a.pt")), load_checkpoint(str(tmp_path / "b.pt")),
             progress=lambda i, n: seen.append((i, n)))
    assert r.equal and seen[-1] == (len(weights), len(weights))


def test_diff_bad_input_exit_2(tmp_path: Path, weights: dict) -> None:
    torch.save(weights, tmp_path / "a.pt")
    result = runner.invoke(app, ["diff", str(tmp_path / "a.pt"), str(tmp_path / "missing.pt")])
    assert result.exit_code == 2 and "missing.pt" in result.stderr


def test_size_matches_torch(tmp_path: Path) -> None:
    emb = torch.nn.Embedding(100, 16)
    model = torch.nn.ModuleDict({"emb": emb, "body": torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.BatchNorm1d(16)),
                                 "head": torch.nn.Linear(16, 100, bias=False)})
    model["head"].weight = emb.weight
    sd = model.state_dict()
    torch.save(sd, tmp_path / "m.pt")
    result = runner.invoke(app, ["size", str(tmp_path / "m.pt"), "--format", "json", "--depth", "1", "--top", "3"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    unique = {id(p): p for p in model.parameters()}
    assert data["parameters"] == sum(p.numel() for p in unique.values())
    distinct = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in sd.values()}
    assert data["nbytes"] == sum(distinct.values())
    assert data["duplicate_nbytes"] == emb.weight.nbytes
    assert data["file_bytes"] == (tmp_path / "m.pt").stat().st_size
    mods = {m["module"]: m for m in data["by_module"]}
    # each module holds the tied storage (module_tree's rule), so the rows add up to one copy more
    assert mods["emb"]["nbytes"] == emb.weight.nbytes and mods["head"]["nbytes"] == emb.weight.nbytes
    assert sum(m["nbytes"] for m in data["by_module"]) == data["nbytes"] + emb.weight.nbytes
    assert data["by_dtype"]["int64"]["tensors"] == 1
    assert [t["name"] for t in data["top"]][:1] in (["emb.weight"], ["head.weight"])
    assert len(data["top"]) == 3
    depth2 = json.loads(runner.invoke(app, ["size", str(tmp_path / "m.pt"), "-f", "json", "--depth", "2"]).stdout)
    assert {m["module"] for m in depth2["by_module"]} >= {"body.0", "body.1"}


def test_size_reads_no_values(tmp_path: Path) -> None:
    """size works on a header whose data section is a hole: it never reads tensor bytes."""
    import struct

    path = tmp_path / "big.safetensors"
    header = json.dumps({"w": {"dtype": "BF16", "shape": [1 << 20, 512], "data_offsets": [0, 1 << 30]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + (1 << 30))
    data = json.loads(runner.invoke(app, ["size", str(path), "-f", "json"]).stdout)
    assert data["parameters"] == (1 << 20) * 512 and data["parameters_human"] == "536.9 M"


def test_diff_compares_model_state_unless_all(tmp_path: Path, weights: dict) -> None:
    torch.save(weights, tmp_path / "plain.pt")
    torch.save({"model": weights, "epoch": 3, "optimizer": {"state": {0: {"m": torch.ones(2)}}}}, tmp_path / "t.pt")
    code, data = _diff_json(tmp_path / "plain.pt", tmp_path / "t.pt")
    assert code == 0 and data["summary"]["equal"] == len(weights)
    code, data = _diff_json(tmp_path / "plain.pt", tmp_path / "t.pt", "--all")
    added = {k["name"] for k in data["keys"] if k["status"] == "added"}
    assert code == 1 and added == {"epoch", "optimizer.state.0.m"}


def test_diff_expanded_views_and_exact_integers(tmp_path: Path) -> None:
    torch.save({"e": torch.zeros(1).expand(4)}, tmp_path / "e.pt")
    code, data = _diff_json(tmp_path / "e.pt", tmp_path / "e.pt")
    assert code == 0 and data["equal"]
    torch.save({"i": torch.tensor([2**60])}, tmp_path / "a.pt")
    torch.save({"i": torch.tensor([2**60 + 1])}, tmp_path / "b.pt")
    code, data = _diff_json(tmp_path / "a.pt", tmp_path / "b.pt", "--rtol", "0", "--atol", "0")
    assert code == 1 and data["keys"][0]["mismatched"] == 1 and data["keys"][0]["max_abs"] == 1.0
