"""Aligned tables that never lose data: numbers keep their width and alignment at any terminal
width, only text columns (names, evidence) wrap, no line carries trailing spaces, and thousands of
rows cost one string join each (no layout engine)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

GAP = 2
_CONTROL = re.compile("[\x07\x08\x0b\x0c\x0d]")  # the codes rich's Text strips (rich.control)


@dataclass(frozen=True)
class Col:
    head: str
    right: bool = False  # numbers: right-aligned, never wrapped
    wrap: bool = False  # text that may fold onto more lines when the terminal is narrow
    min_width: int = 12  # a wrapping column is never squeezed below this
    key: bool = False  # the names: never folded or cut; one longer than its column gets a line of its own
    # At a width the table does not fit (see `fit`), least important first: a `uniform` column whose cells
    # are all equal moves into the title, a `short` column's cells go through it (evidence: its first word), then columns
    # with a `drop` rank go, highest rank first (0: always shown).
    uniform: bool = False
    short: Callable[[str], str] | None = None
    drop: int = 0


# Styles for the kind column: a reader sees the parameter/buffer split at a glance.
KIND_STYLES = {"parameter": "green", "buffer": "cyan", "buffer (non-persistent)": "blue",
               "optimizer state": "magenta", "tensor attribute": "yellow", "unknown": "red"}


def widths(cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int | None) -> list[int]:
    """Natural column widths, then the wrapping columns narrowed (widest first) until the table
    fits `width`, then the name column (its longer names take lines of their own); a table that
    cannot fit keeps every number whole and runs past the edge instead."""
    w = [max([len(c.head)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    if width is None:
        return w
    excess = sum(w) + GAP * (len(w) - 1) - width
    while excess > 0:
        candidates = [i for i, c in enumerate(cols) if c.wrap and not c.key and w[i] > max(c.min_width, len(c.head))]
        if not candidates:
            break
        i = max(candidates, key=lambda j: w[j])
        w[i] -= 1
        excess -= 1
    room = sum(w[i] - len(c.head) for i, c in enumerate(cols) if c.key)
    for i, c in enumerate(cols):
        # Down to its heading when that makes the table fit (longer names each take a line of their own);
        # a table too wide anyway (--stats) keeps its names on their rows.
        if c.key and 0 < excess <= room:
            cut = min(excess, w[i] - len(c.head))
            w[i] -= cut
            excess -= cut
    return w


def _natural(cols: Sequence[Col], rows: Sequence[Sequence[str]]) -> int:
    """The width the table needs with nothing folded."""
    return sum(max([len(c.head)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)) + GAP * (len(cols) - 1)


def fit(title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int | None,
        styles: dict[int, dict[str, str]] | None = None
        ) -> tuple[str | None, list[Col], list[list[str]], dict[int, dict[str, str]] | None]:
    """The table for a terminal it does not fit whole: uniform columns go into the title, short columns
    are shortened, then droppable columns go, highest rank first, until the table fits unfolded
    (else `widths` folds text and gives names lines of their own); the title says what moved or went.
    Styles follow their columns."""
    cols, table = list(cols), [list(r) for r in rows]
    notes: list[str] = []
    keep = list(range(len(cols)))

    def fits() -> bool:
        return width is None or _natural([cols[k] for k in keep], [[r[k] for k in keep] for r in table]) <= width

    for i, c in enumerate(cols):
        if not fits() and c.uniform and table and len({r[i] for r in table}) == 1:
            keep.remove(i)
            notes.append(f"{c.head} {table[0][i]}")
    for i, c in enumerate(cols):
        if not fits() and c.short is not None:
            for r in table:
                r[i] = c.short(r[i])
    dropped = []
    for i in sorted((i for i in keep if cols[i].drop), key=lambda i: -cols[i].drop):
        if fits():
            break
        keep.remove(i)
        dropped.append(cols[i].head or "bar")
    if dropped:
        notes.append(f"{', '.join(dropped)} not shown")
    if notes:
        title = f"{title or ''} ({'; '.join(notes)})".lstrip()
    new_styles = {keep.index(i): st for i, st in (styles or {}).items() if i in keep} if styles else styles
    return title, [cols[k] for k in keep], [[r[k] for k in keep] for r in table], new_styles


def _fold(text: str, width: int) -> list[str]:
    """Split `text` into pieces of at most `width`, preferring a break after '.', '/', '_' or ' '."""
    out = []
    while len(text) > width:
        cut = max(text.rfind(ch, 0, width) for ch in "./_ ") + 1
        if cut <= width // 3:
            cut = width
        out.append(text[:cut].rstrip())
        text = text[cut:].lstrip(" ")
    out.append(text)
    return out


def lines(cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int | None) -> list[list[tuple[str, int]]]:
    """Physical lines of the table (header first) as cells of (padded text, column index)."""
    w = widths(cols, rows, width)
    result = _physical(cols, w, [c.head for c in cols])
    for r in rows:
        result += _physical(cols, w, r)
    return result


def _physical(cols: Sequence[Col], w: list[int], cells: Sequence[str]) -> list[list[tuple[str, int]]]:
    alone = [(c, i) for i, c in enumerate(cells) if cols[i].key and len(c) > w[i]]
    if alone:  # a name longer than its column: whole on a line of its own, the row's cells below it
        cells = ["" if cols[i].key and len(c) > w[i] else c for i, c in enumerate(cells)]
        return [[a] for a in alone] + _physical(cols, w, cells)
    pieces = [_fold(c, w[i]) if cols[i].wrap and len(c) > w[i] else [c] for i, c in enumerate(cells)]
    height = max(len(p) for p in pieces)
    out = []
    for k in range(height):
        line = []
        for i, p in enumerate(pieces):
            text = p[k] if k < len(p) else ""
            line.append((text.rjust(w[i]) if cols[i].right else text.ljust(w[i]), i))
        out.append(line)
    return out


def _plain_lines(cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int | None) -> list[str]:
    """The lines `lines` gives, joined and right-stripped as print_grid prints them: a row that
    needs no folding is one join (no cell tuples), the rest go through _physical."""
    from rich.control import strip_control_codes  # what Text.append does to each cell

    w = widths(cols, rows, width)
    gap = " " * GAP
    just = [(str.rjust if c.right else str.ljust, w[i]) for i, c in enumerate(cols)]
    folding = [(i, w[i]) for i, c in enumerate(cols) if c.wrap or c.key]
    out = []
    for r in [[c.head for c in cols], *rows]:
        for i, n in folding:
            if len(r[i]) > n:
                out += [gap.join(cell for cell, _ in line) for line in _physical(cols, w, r)]
                break
        else:
            out.append(gap.join([f(c, n) for (f, n), c in zip(just, r)]))
    if _CONTROL.search("".join(out)):  # stripped before the line's trailing spaces, as rich does
        return [strip_control_codes(line).rstrip() for line in out]
    return [line.rstrip() for line in out]


def console_width(con: Any) -> int | None:
    """The width to fit: a terminal's (or an explicit COLUMNS); None for piped output, which keeps whole
    lines for grep and scripts."""
    return con.width if con.is_terminal or os.environ.get("COLUMNS") else None


BAR_MIN = 8  # a bar narrower than this says too little: it goes


def bar_room(con: Any, cols: Sequence[Col], rows: Sequence[Sequence[str]], most: int) -> int:
    """Cells a bar after these columns may take on `con`: `most` when they leave room (or output is piped),
    else what they leave, 0 (no bar) when that is under BAR_MIN."""
    width = console_width(con)
    if width is None:
        return most
    left = min(most, width - _natural(cols, rows) - GAP)
    return left if left >= BAR_MIN else 0


def print_grid(con: Any, title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[str]],
               styles: dict[int, dict[str, str]] | None = None) -> None:
    """Print a table on a rich console: a bold title, an underlined header, then the rows. `styles`
    maps a column index to {cell text: style} (the kind column's colours); NO_COLOR turns them off
    through rich itself."""
    from rich.text import Text

    width = console_width(con)
    title, cols, rows, styles = fit(title, cols, rows, width, styles)
    if _plain(con):
        _write_plain(con, title, _plain_lines(cols, rows, width))
        return
    table = lines(cols, rows, width)
    if title:  # folded at the terminal's width like any sentence (the table's own lines never are)
        con.print(Text(title, style="bold"), soft_wrap=width is None or len(title) <= width)
    for n, line in enumerate(table):
        text = Text(no_wrap=True, overflow="ignore")
        for k, (cell, i) in enumerate(line):
            if k:
                text.append(" " * GAP)
            style = "bold underline" if n == 0 else (styles or {}).get(i, {}).get(cell.strip(), "")
            text.append(cell, style=style or None)
        text.rstrip()
        con.print(text, soft_wrap=True)


def _plain(con: Any) -> bool:
    """A console that prints no styles (no colour system: piped, or a dumb terminal) and records
    nothing: what rich would write for a soft-wrapped Text is its text, which we can write ourselves
    (rich costs ~70 us a line: 3.5 s for a 50,000-tensor listing)."""
    return (con.color_system is None and not con.record and not con.is_jupyter
            and not getattr(con, "_buffer_index", 0) and not getattr(con, "_render_hooks", None))


def _write_plain(con: Any, title: str | None, table: list[str]) -> None:
    """Write what con.print(Text(...), soft_wrap=True) would for the title and each table line (cells
    already stripped of control codes, as Text.append strips them); a line with a tab, which rich
    expands, goes through rich."""
    from rich.control import strip_control_codes
    from rich.text import Text

    chunk: list[str] = []
    width = console_width(con)
    head = [strip_control_codes(title)] if title else []
    if head and width is not None and len(head[0]) > width:  # a sentence: folded at words, as rich prints it
        import textwrap

        head = textwrap.wrap(head[0], width, break_long_words=False, break_on_hyphens=False)
        title = None  # every line of it is a title line (not right-stripped twice)
    for n, t in enumerate(head + table):
        if "\t" in t:
            con.file.write("".join(chunk))
            chunk = []
            text = Text(t, no_wrap=True, overflow="ignore")
            if n or not title:
                text.rstrip()
            con.print(text, soft_wrap=True)
            continue
        chunk.append(t + "\n")
        if len(chunk) >= 4096:
            con.file.write("".join(chunk))
            chunk = []
    con.file.write("".join(chunk))
