"""The human view of `show`: one tensor's place in the module tree, its statistics and histogram."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..io.stdin import shown_path
from ..units import fmt_bytes, fmt_count, fmt_shape
from .charts import bar
from .grid import KIND_STYLES, Col, bar_room, print_grid
from .text import FINITE_HEADS, escape, finite_cells, fmt_float

if TYPE_CHECKING:
    from ..analyses.show import ShowResult


def _num(v: Any) -> str:
    return fmt_float(v) if isinstance(v, float) else str(v)


def render_show(r: ShowResult, con: Any) -> None:
    from rich.text import Text

    ck, e, t = r.checkpoint, r.entry, r.entry.tensor
    con.print(Text(f"{escape(shown_path(ck))}  {ck.format}", style="bold"))
    head = Text(escape(e.name), style="bold")
    head.append(f"  {e.kind}", style=KIND_STYLES.get(e.kind, ""))
    head.append(f" ({e.evidence})")
    if t is not None:
        head.append(f"  {t.dtype} {fmt_shape(t.shape)}  {t.numel:,} elements  {fmt_bytes(t.nbytes)}  {t.device}")
    con.print(head)
    rows = []
    for depth, lv in enumerate(r.path):
        rows.append(["  " * depth + escape(lv.path.rsplit(".", 1)[-1] if depth else lv.path), str(lv.tensors),
                     fmt_count(lv.numel), fmt_bytes(lv.nbytes)])
    here = "  " * len(r.path)
    for sib in r.siblings:
        st = sib.tensor
        mark = "> " if sib.name == e.name else "  "
        rows.append([here[:-2] + mark + escape(sib.name.rsplit(".", 1)[-1]), "", fmt_count(st.numel) if st else "",
                     fmt_bytes(st.nbytes) if st else ""])
    print_grid(con, "where it sits", [Col("module", key=True), Col("tensors", right=True), Col("numel", right=True),
                                      Col("size", right=True)], rows)
    if t is None:
        con.print(Text(f"value ({escape(e.value_type or '')}): {escape(str(e.value))}"))
        return
    s = r.stats
    if s is None or s.note is not None:
        con.print(Text(f"values: {escape((s.note if s else None) or 'not read')}"))
        return
    zeros = s.frac(s.zeros)
    figures = [("min", s.min), ("max", s.max), ("mean", s.mean), ("std", s.std), ("|x| p50", s.p50_abs),
               ("|x| p99", s.p99_abs)][:4 if s.has_non_finite else 6]  # with NaN/Inf: percentiles on the finite line
    con.print(Text("  ".join(f"{k} {fmt_float(v)}" for k, v in figures)
                   + f"  zeros {zeros or 0:.2%}  NaN {s.nan:,}  Inf {s.inf:,}"))
    if s.has_non_finite:  # the headline figures are torch's: say what the finite values alone give
        con.print(Text("  ".join(f"{k} {v}" for k, v in zip(FINITE_HEADS, finite_cells(s)))
                       + f"  |x| p50 {fmt_float(s.p50_abs)}  |x| p99 {fmt_float(s.p99_abs)}"
                       + f" (percentiles of the {s.finite:,} finite values)"))
    edges = r.edges()
    if edges:
        top = max(s.hist) or 1
        cols = [Col("from", right=True), Col("to", right=True), Col("count", right=True)]
        hist = [[fmt_float(edges[i]), fmt_float(edges[i + 1]), f"{c:,}"] for i, c in enumerate(s.hist)]
        room = bar_room(con, cols, hist, 40)
        print_grid(con, f"histogram of the {s.finite:,} finite values ({len(s.hist)} bins, every value counted)",
                   [*cols, Col("")], [[*row, bar(c / top, room)] for row, c in zip(hist, s.hist)])
    con.print(Text(f"first {len(r.first)}: " + ", ".join(_num(v) for v in r.first)))
    for title, xs in (("smallest", r.smallest), ("largest", r.largest)):
        if xs:
            con.print(Text(f"{title}: " + ", ".join(f"{fmt_float(x.value)} at {list(x.index)}" for x in xs)))
