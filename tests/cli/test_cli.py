"""The CLI through CliRunner: each output format, exit codes, errors as one line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli import __version__
from statecli.cli import app
from tests.conftest import small_cnn

runner = CliRunner()



def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout and "inspect" in result.stdout


def test_inspect_json(cnn: Path) -> None:
    sd = small_cnn().state_dict()
    data = _json(["inspect", str(cnn), "--format", "json"])
    assert data["format"] == "torch zip" and data["container"] == ""
    entries = {e["name"]: e for e in data["entries"]}
    assert list(entries) == list(sd)
    for name, t in sd.items():
        e = entries[name]
        assert e["dtype"] == str(t.dtype).removeprefix("torch.")
        assert e["shape"] == list(t.shape) and e["numel"] == t.numel() and e["nbytes"] == t.nbytes
        assert e["device"] == "cpu" and e["evidence"]
    assert entries["bn.running_var"]["kind"] == "buffer"
    assert entries["bn.num_batches_tracked"]["kind"] == "buffer"
    assert entries["conv.weight"]["kind"] == "parameter"
    assert data["summary"]["total"]["nbytes"] == sum(t.nbytes for t in sd.values())


def test_inspect_kind_and_filter(cnn: Path) -> None:
    data = _json(["inspect", str(cnn), "--format", "json", "--kind", "buffer"])
    assert {e["name"] for e in data["entries"]} == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    data = _json(["inspect", str(cnn), "--format", "json", "--filter", r"^head\."])
    assert {e["name"] for e in data["entries"]} == {"head.weight", "head.bias"}
    bad = runner.invoke(app, ["inspect", str(cnn), "--filter", "("])
    assert bad.exit_code == 2 and "regular expression" in bad.stderr
    bad = runner.invoke(app, ["inspect", str(cnn), "--kind", "weights"])
    assert bad.exit_code == 2 and "--kind" in bad.stderr and "'weights'" in bad.stderr  # Typer names the choices


def test_inspect_table_tree_csv_md(cnn: Path) -> None:
    table = runner.invoke(app, ["inspect", str(cnn)])
    assert table.exit_code == 0
    for needle in ("bn.running_var", "buffer", "parameter", "float32", "[4, 3, 3, 3]", "summary"):
        assert needle in table.stdout
    tree = runner.invoke(app, ["inspect", str(cnn), "--tree"])
    assert tree.exit_code == 0 and "bn" in tree.stdout and "running_var" in tree.stdout
    out = runner.invoke(app, ["inspect", str(cnn), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["name"] for r in rows} == set(small_cnn().state_dict())
    md = runner.invoke(app, ["inspect", str(cnn), "--format", "md"])
    assert md.stdout.count("| bn.") == sum(k.startswith("bn.") for k in small_cnn().state_dict())


def test_inspect_stats_match_torch(cnn: Path) -> None:
    sd = torch.load(cnn, weights_only=True)
    data = _json(["inspect", str(cnn), "--format", "json", "--stats"])
    for e in data["entries"]:
        t = sd[e["name"]].double()
        st = e["stats"]
        assert st["min"] == pytest.approx(float(t.min()))
        assert st["max"] == pytest.approx(float(t.max()))
        assert st["mean"] == pytest.approx(float(t.mean()), abs=1e-12)
        if t.numel() > 1:
            assert st["std"] == pytest.approx(float(t.std()), rel=1e-6, abs=1e-12)


def test_stats_count_nan_inf(tmp_path: Path) -> None:
    path = tmp_path / "n.safetensors"
    save_file({"x": torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 3.0])}, str(path))
    data = _json(["inspect", str(path), "--format", "json", "--stats"])
    st = data["entries"][0]["stats"]
    # torch's figures (a NaN makes them NaN), the finite-only ones beside them; non-finite numbers are strings
    assert (st["nan"], st["inf"], st["min"], st["max"], st["mean"]) == (1, 2, "nan", "nan", "nan")
    assert (st["finite_min"], st["finite_max"], st["finite"]) == (1.0, 3.0, 2)
    inf = tmp_path / "i.safetensors"
    save_file({"x": torch.tensor([0.5, -1.0, float("inf")])}, str(inf))
    st = _json(["inspect", str(inf), "--format", "json", "--stats"])["entries"][0]["stats"]
    assert (st["min"], st["max"], st["mean"], st["std"], st["finite_max"]) == (-1.0, "inf", "inf", "nan", 0.5)


def test_tied_weights_counted_once(tmp_path: Path) -> None:
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head})
    torch.save(model.state_dict(), tmp_path / "tied.pt")
    data = _json(["inspect", str(tmp_path / "tied.pt"), "--format", "json"])
    assert data["summary"]["total"]["nbytes"] == emb.weight.nbytes
    assert data["summary"]["total"]["view_nbytes"] == 2 * emb.weight.nbytes
    assert data["summary"]["shared"][0]["names"] == ["emb.weight", "head.weight"]


def test_key_and_strip_prefix(tmp_path: Path) -> None:
    torch.save({"model": {"module.w": torch.zeros(2)}, "ema": {"module.w": torch.ones(2)}, "epoch": 1}, tmp_path / "c.pt")
    data = _json(["inspect", str(tmp_path / "c.pt"), "--format", "json", "--strip-prefix", "module."])
    assert data["container"] == "model"
    assert [e["name"] for e in data["entries"] if e["group"] is None] == ["w"]
    data = _json(["inspect", str(tmp_path / "c.pt"), "--format", "json", "--key", "ema"])
    assert data["container"] == "ema"
    bad = runner.invoke(app, ["inspect", str(tmp_path / "c.pt"), "--key", "nope"])
    assert bad.exit_code == 2 and "no container 'nope'" in bad.stderr


def test_cuda_saved_file_points_to_move(tmp_path: Path, samples: Path) -> None:
    data = _json(["inspect", str(samples / "cuda.pt"), "--format", "json"])
    assert {e["device"] for e in data["entries"] if e["dtype"]} == {"cuda:0"}
    assert any("statecli move" in n for n in data["notes"])


def test_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    result = runner.invoke(app, ["inspect", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and str(missing) in result.stderr and "Traceback" not in result.stderr
