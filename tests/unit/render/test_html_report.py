"""--format html: one self-contained page, names escaped, charts and a collapsible tree present."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from statecli.analyses.diff import diff
from statecli.analyses.inspect import inspect
from statecli.analyses.show import show
from statecli.analyses.size import size_of
from statecli.load import load_checkpoint
from statecli.render import render
from statecli.render.charts import bar, rebin, spark, svg_bar_chart, svg_histogram

HOSTILE = '<script>alert(1)</script>.w"x'


def _html(result: object) -> str:
    buf = io.StringIO()
    render(result, "html", buf)
    return buf.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    a = {HOSTILE: torch.randn(4, 4), "enc.layer.weight": torch.randn(8, 8), "enc.layer.bias": torch.zeros(8)}
    b = {k: v + 1 for k, v in a.items()}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


def test_every_page_is_self_contained_and_escapes_names(files: tuple[Path, Path]) -> None:
    a, b = (load_checkpoint(str(p)) for p in files)
    pages = [_html(inspect(a, stats=True)), _html(size_of(a, 2)), _html(diff(a, b, depth=2)),
             _html(show(a, "enc.layer.weight"))]
    for page in pages:
        assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
        assert not re.search(r"https?://|\bsrc=|\bhref=|<script|<link|@import|url\(", page, re.I)
        assert "default-src 'none'" in page  # even a missed name could fetch nothing
        assert "<svg" in page
    for page in pages[:3]:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<details" in page


def test_charts() -> None:
    assert bar(1.0, 4) == "████" and bar(0.5, 3) == "█▌" and bar(1e-9, 10) == "▏" and bar(0, 5) == bar(None) == ""
    assert spark([0, 1, 8, 4]) == " ▁█▄" and spark([]) == ""
    assert rebin([1, 2, 3, 4], 2) == [3, 7]
    chart = svg_bar_chart([("a<b", 2.0, "2"), ("c", 1.0, "1"), ("inf", float("inf"), "inf")], "t")
    assert chart.count("<rect") == 3 and "a&lt;b" in chart
    assert svg_histogram([1, 0, 3]).count("<rect") == 2 and svg_histogram([0, 0]) == ""
