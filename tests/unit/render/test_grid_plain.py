"""print_grid writes piped tables itself: byte for byte what rich prints (control codes stripped,
folded cells, trailing spaces, tabs), and rich still draws a terminal's styled table."""

from __future__ import annotations

import io

import pytest

from statecli.render import grid
from statecli.render.grid import Col, print_grid
from statecli.render.text import make_console

COLS = [Col("name", wrap=True, min_width=6), Col("kind"), Col("n", right=True)]
ROWS = [["a.weight", "parameter", "1"], ["x" * 40 + ".bias", "buffer", "1,024"],
        ["bell\x07 and cr\r", "buffer", "3"], ["tab\there", "parameter ", ""], ["trailing  ", "", ""],
        ["ünïcødé", "param", "7"]]


def _print(monkeypatch: pytest.MonkeyPatch, plain: bool, columns: str | None) -> str:
    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    else:
        monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(grid, "_plain", lambda con: plain)
    out = io.StringIO()
    print_grid(make_console(out), "title\x07 ", COLS, ROWS, {1: grid.KIND_STYLES})
    return out.getvalue()


@pytest.mark.parametrize("columns", [None, "24", "200"])
def test_plain_path_matches_rich(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    fast = _print(monkeypatch, True, columns)
    assert fast == _print(monkeypatch, False, columns)
    assert "\x07" not in fast and "\r" not in fast


def test_plain_only_without_styles() -> None:
    piped = make_console(io.StringIO())
    assert grid._plain(piped)
    from rich.console import Console

    assert not grid._plain(Console(file=io.StringIO(), force_terminal=True, color_system="standard"))
    assert not grid._plain(Console(file=io.StringIO(), record=True))
