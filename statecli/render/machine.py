"""JSON, CSV and Markdown from a result's own `to_dict()` and `rows()`: no format knows a command."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from typing import IO, Any

from ..state import gc_paused
from ..units import non_finite_str
from .text import escape


def write_json(data: Any, out: IO[str]) -> None:
    """`data` as JSON. A non-finite float anywhere in it is written as units.non_finite_str says (a string):
    results convert their own, and whatever reaches here raw is converted before a byte is written."""
    # Indented output goes through json's pure-Python encoder (~70 ms per 1,000 entries); big
    # listings use the C encoder with one entry per line instead.
    entries = data.get("entries") if isinstance(data, dict) else None
    if isinstance(entries, list) and len(entries) > 500:
        head = {k: v for k, v in data.items() if k != "entries"}
        text = _encoded(json.JSONEncoder(allow_nan=False, default=_default).encode, head)[:-1]
        out.write(text + (', ' if head else '') + '"entries": [\n')
        encode = json.JSONEncoder(allow_nan=False, default=_default).encode  # json.dumps builds one per call
        with gc_paused():
            for i in range(0, len(entries), 4096):  # written in slices: the text never exists whole
                out.write((",\n" if i else "") + ",\n".join([_encoded(encode, e) for e in entries[i:i + 4096]]))
        out.write("\n]}\n")
        return
    out.write(_encoded(lambda d: json.dumps(d, indent=2, allow_nan=False, default=_default), data) + "\n")


def _default(v: Any) -> Any:
    """What json cannot encode itself: a read-only mapping (a frozen Checkpoint's metadata) as the dict it
    is, anything else as its text."""
    return dict(v) if isinstance(v, Mapping) else str(v)


def _encoded(encode: Any, data: Any) -> str:
    try:
        return str(encode(data))
    except ValueError:  # a raw NaN/Inf (allow_nan=False): the one convention, applied here
        return str(encode(finite_json(data)))


def finite_json(v: Any) -> Any:
    """`v` with every non-finite float replaced by its string (units.non_finite_str), recursively."""
    if isinstance(v, Mapping):
        return {k: finite_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_json(x) for x in v]
    return non_finite_str(v)


def columns_of(result: Any, rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """A result's declared columns, else every key its rows use, in first-seen order."""
    declared = getattr(result, "columns", None)
    if declared:
        return tuple(declared)
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r))
    return tuple(seen)


def _cell(v: Any) -> str:
    return escape("" if v is None else str(v))


def write_csv(columns: tuple[str, ...], rows: list[dict[str, Any]], out: IO[str]) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])


def md(s: str) -> str:
    return escape(s).replace("|", "\\|")


def write_md_table(columns: tuple[str, ...], rows: list[dict[str, Any]], out: IO[str]) -> None:
    out.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for r in rows:
        out.write("| " + " | ".join(md(_cell(r.get(c))) for c in columns) + " |\n")


def write_md(result: Any, out: IO[str]) -> None:
    """A Markdown title (the result's `md_title`, when it has one), its rows as a table (or its own
    `md_rows()` under `md_columns`), any extra tables it offers (`md_tables()`: (columns, rows) pairs),
    then its `md_footer` line (a totals line)."""
    title = getattr(result, "md_title", None)
    if title:
        out.write(f"{md(title)}\n\n")
    if hasattr(result, "md_rows"):  # a result with its own Markdown view (check: one line per file, marks)
        write_md_table(result.md_columns, result.md_rows(), out)
    else:
        rows = result.rows()
        write_md_table(columns_of(result, rows), rows, out)
    for columns, rows in getattr(result, "md_tables", lambda: [])():
        out.write("\n")
        write_md_table(columns, rows, out)
    footer = getattr(result, "md_footer", None)
    if footer:
        out.write(f"\n{md(footer)}\n")
