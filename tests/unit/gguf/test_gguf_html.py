"""The HTML report of a GGUF (inspect and size): bits per weight by GGML type and by block, as bars
and rows (oracle: gguf-py's GGML_QUANT_SIZES: Q4_0 is 18 bytes per 32 weights, Q8_0 34)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_files import write_gguf

gguf = pytest.importorskip("gguf")


@pytest.mark.parametrize("command", ["inspect", "size"])
def test_html_shows_bits_per_weight_by_type_and_block(tmp_path: Path, command: str) -> None:
    rng = np.random.default_rng(1)
    g = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_up.weight": (rng.standard_normal((8, 64)).astype(np.float32), "Q4_0"),
                                         "blk.1.ffn_up.weight": (rng.standard_normal((8, 64)).astype(np.float32), "Q8_0")})
    r = CliRunner().invoke(app, [command, str(g), "--format", "html"])
    assert r.exit_code == 0, r.output
    rows: dict[str, str] = {}
    for m in re.finditer(r"<tr><td[^>]*>([^<]+)</td>(.*?)</tr>", r.stdout):
        rows.setdefault(m.group(1), m.group(2))  # the GGUF section comes first (then "by dtype")
    for key, t in (("blk.0", "Q4_0"), ("blk.1", "Q8_0"), ("Q4_0", "Q4_0"), ("Q8_0", "Q8_0")):
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t]]
        assert f">{size * 8 / block:.2f}<" in rows[key], (key, rows[key])
    assert "bits/weight by block" in r.stdout and "bits/weight overall" in r.stdout


def test_browse_module_line_shows_bits_per_weight_per_block(tmp_path: Path) -> None:
    pytest.importorskip("textual")
    from statecli.analyses.inspect import inspect
    from statecli.load import load_checkpoint
    from statecli.tui import browse_data
    from statecli.tui.app import BrowserApp

    rng = np.random.default_rng(1)
    g = write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_up.weight": (rng.standard_normal((8, 64)).astype(np.float32), "Q4_0"),
                                         "blk.1.ffn_up.weight": (rng.standard_normal((8, 64)).astype(np.float32), "Q8_0")})
    app = BrowserApp(browse_data(inspect(load_checkpoint(str(g)))))
    app.below = ()
    tree = app.data.tree()
    lines = {p: app._module_line(tree.nodes[p]).plain for p in ("", "blk.0", "blk.1")}
    assert "4.50 bits/weight" in lines["blk.0"] and "Q4_0" in lines["blk.0"]
    assert "8.50 bits/weight" in lines["blk.1"] and "bits/weight" in lines[""]
    assert lines["blk.1"].count("█") > lines["blk.0"].count("█")  # the bar: Q8_0 spends more than Q4_0
