"""The table layout: numbers survive any width, text columns wrap, no trailing spaces."""

from __future__ import annotations

import io

from rich.console import Console

from statecli.render.grid import Col, lines, print_grid, widths

COLS = [Col("name", wrap=True, min_width=8), Col("kind", wrap=True, min_width=6), Col("numel", right=True),
        Col("size", right=True)]
ROWS = [["encoder.layers.0.attention.query.weight", "parameter", "1,048,576", "4.0 MiB"],
        ["bn.num_batches_tracked", "buffer (non-persistent)", "1", "8 B"]]


def _text(width: int | None) -> list[str]:
    return ["  ".join(cell for cell, _ in line).rstrip() for line in lines(COLS, ROWS, width)]


def test_wide_terminal_one_line_per_row() -> None:
    out = _text(200)
    assert len(out) == 3
    assert out[1].startswith("encoder.layers.0.attention.query.weight")


def test_narrow_terminal_wraps_text_and_keeps_numbers_whole() -> None:
    out = _text(40)
    assert all(len(line) <= 40 for line in out)
    joined = "\n".join(out)
    for number in ("1,048,576", "4.0 MiB", "8 B"):
        assert number in joined
    # the name comes back whole when its pieces are joined in order
    name_col = widths(COLS, ROWS, 40)[0]
    pieces = [line[:name_col].strip() for line in out[1:]]
    assert "".join(pieces).startswith("encoder.layers.0.attention.query.weight")


def test_numbers_right_aligned() -> None:
    out = _text(None)
    size_end = len(out[0])
    assert out[1].endswith("4.0 MiB") and out[2].endswith("8 B") and len(out[1]) == len(out[2]) == size_end


def test_impossible_width_runs_long_instead_of_cutting() -> None:
    out = _text(10)
    assert any("1,048,576" in line for line in out)


def test_no_trailing_spaces_on_a_console() -> None:
    buf = io.StringIO()
    con = Console(file=buf, width=60, no_color=True)
    print_grid(con, "title", COLS, ROWS)
    assert all(line == line.rstrip() for line in buf.getvalue().splitlines())


def test_kind_column_coloured_unless_no_color(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from statecli.render.grid import KIND_STYLES

    rows = [["w", "parameter"], ["b", "buffer"]]
    cols = [Col("name"), Col("kind")]
    buf = io.StringIO()
    print_grid(Console(file=buf, force_terminal=True, color_system="standard", width=80), None, cols, rows,
               {1: KIND_STYLES})
    assert "\x1b[32mparameter" in buf.getvalue() and "\x1b[36mbuffer" in buf.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    plain = io.StringIO()
    print_grid(Console(file=plain, force_terminal=True, color_system="standard", width=80), None, cols, rows,
               {1: KIND_STYLES})
    assert "\x1b[3" not in plain.getvalue()
