"""inspect --stats/show/diff: sampled figures say so in every view, --exact takes every value, torch's
min/max/mean beside the finite-only figures, and one convention for non-finite numbers in all JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.analyses import stats as st
from statecli.cli import app

runner = CliRunner()


def _strict(text: str) -> object:
    """json.loads that refuses NaN/Infinity tokens (Python's json accepts them; JSON does not)."""
    def bad(token: str) -> None:
        raise AssertionError(f"non-JSON token {token}")
    return json.loads(text, parse_constant=bad)


def _run(args: list[str], code: int = 0) -> str:
    r = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert r.exit_code == code, r.output
    return r.stdout


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_file({"big": torch.randn(300, 384, generator=g), "inf": torch.tensor([0.5, -1.0, float("inf")]),
               "small": torch.randn(10, generator=g)}, str(path))
    return path


def test_every_view_says_which_figures_are_sampled(ckpt: Path) -> None:
    d = _strict(_run(["inspect", str(ckpt), "--stats", "-f", "json"]))
    stats = {e["name"]: e["stats"] for e in d["entries"]}
    assert stats["big"]["exact"] is False and stats["big"]["sampled"] == st.SAMPLE
    assert stats["small"]["exact"] is True and stats["small"]["sampled"] == 10
    text = _run(["inspect", str(ckpt), "--stats"])
    assert f"random sample of up to {st.SAMPLE:,} values" in text and "--exact" in text
    big_row = [line for line in text.splitlines() if line.startswith("big ")][-1]  # the values table's row
    assert big_row.count("*") == 3  # p50, p99, histogram
    html = _run(["inspect", str(ckpt), "--stats", "-f", "html"])
    assert f"random sample of up to {st.SAMPLE:,} values" in html and f"random sample of {st.SAMPLE:,} values" in html


def test_exact_takes_every_value(ckpt: Path) -> None:
    d = _strict(_run(["inspect", str(ckpt), "--exact", "-f", "json"]))
    big = next(e["stats"] for e in d["entries"] if e["name"] == "big")
    assert big["exact"] is True and big["sampled"] == 300 * 384
    from safetensors.torch import load_file

    t = load_file(str(ckpt))["big"].double().abs().reshape(-1)
    want = torch.quantile(t, torch.tensor([0.5, 0.99], dtype=torch.float64))
    assert [big["p50_abs"], big["p99_abs"]] == [float(x) for x in want]
    assert "random sample" not in _run(["inspect", str(ckpt), "--exact"])


def test_headline_figures_are_torchs_and_finite_ones_are_labelled(ckpt: Path) -> None:
    text = _run(["inspect", str(ckpt), "--stats"])
    assert "finite max" in text
    row = [line for line in text.splitlines() if line.startswith("inf ")][-1].split()  # the values table's row
    assert row[1:5] == ["-1", "inf", "inf", "nan"]  # min, max, mean, std as torch.min/max/mean/std say
    shown = _run(["show", str(ckpt), "inf"])
    assert "max inf" in shown and "finite max 0.5" in shown
    s = _strict(_run(["show", str(ckpt), "inf", "-f", "json"]))
    assert json.dumps(s).count('"inf"') >= 2


def test_non_finite_numbers_are_strings_in_every_json_output(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save({"w": torch.zeros(4), "x": torch.tensor([1.0, float("nan")]), "loss": float("nan"),
                "best": float("-inf")}, a)
    torch.save({"w": torch.ones(4), "x": torch.tensor([1.0, float("nan")]), "loss": 1.0, "best": 0.0}, b)
    inspected = _strict(_run(["inspect", str(a), "--stats", "-f", "json"]))
    values = {e["name"]: e.get("value") for e in inspected["entries"]}
    assert values["loss"] == "nan" and values["best"] == "-inf"  # a NaN saved as a value: no crash, a string
    diffed = _strict(_run(["diff", str(b), str(a), "-f", "json"], code=1))
    assert "inf" in json.dumps(diffed)  # rel_change of the all-zero tensor
    assert _strict(_run(["check", str(a), "--no-nan", "-f", "json"], code=1))
    assert _strict(_run(["show", str(a), "x", "-f", "json"]))


def test_sample_positions_are_uniform_and_stable() -> None:
    p = st.sample_positions(1_000_003, 1 << 16)
    assert p.size == 1 << 16 and np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() < 1_000_003
    assert np.array_equal(p, st.sample_positions(1_000_003, 1 << 16))
    # every residue of a row length is hit about equally (no every-k-th aliasing)
    counts = np.bincount(p % 384, minlength=384)
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()
    assert st.sample_positions(100, 1 << 16) is None
