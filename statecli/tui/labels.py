"""The browser's text: tree labels, table cells and the stats pane as rich Text built from data,
never from markup strings, so a checkpoint name like '[bold]' or an escape sequence shows literally."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..analyses.module_tree import tree_path
from ..render.charts import bar, scale, spark
from ..render.grid import KIND_STYLES, Col, fit
from ..render.text import escape, fmt_float, short_evidence
from ..units import fmt_bytes, fmt_count, fmt_shape

if TYPE_CHECKING:
    from ..analyses.changes import ModuleChange
    from ..analyses.diff import KeyDiff
    from ..analyses.show import ShowResult
    from ..state import Entry
    from .model import Node

SHORT_KIND = {"parameter": "param", "buffer": "buffer", "buffer (non-persistent)": "np-buffer",
              "optimizer state": "optim", "tensor attribute": "attr", "metadata": "meta", "unknown": "unknown"}
STATUS_STYLES = {"equal": "dim", "changed": "yellow", "added": "green", "removed": "red"}
BAR = 8  # cells of the change bar beside a module
# The tensor table's columns. Where the table is wider than its pane, grid.fit (as for inspect's table): a
# uniform device goes into the module line, evidence keeps its first word, then columns go, the highest
# rank first (the detail pane still shows them all), so the names stay whole.
COLUMNS = (Col("name", key=True), Col("kind", drop=1), Col("evidence", short=short_evidence, drop=8), Col("dtype", drop=3),
           Col("shape", drop=5), Col("size", right=True, drop=4), Col("device", uniform=True, drop=9))
DIFF_COLUMNS = (Col("status"), Col("|b-a|/|a|", right=True, drop=2), Col("cosine", right=True, drop=7),
                Col("max |d|", right=True, drop=6))


def kind_style(kind: str) -> str:
    return KIND_STYLES.get(kind, "dim")


def change_style(rel: float | None) -> str:
    """How loud a module's change is: the colour says how far it moved at a glance."""
    if rel is None or rel != rel:
        return "yellow"
    if rel >= 0.1:
        return "bold red"
    if rel >= 1e-2:
        return "red"
    return "yellow" if rel >= 1e-4 else "green"


def change_text(c: ModuleChange, top: float) -> Text:
    """rel change with a bar scaled to the module that moved most, cosine, max |d|, share over tol."""
    out = Text()
    rel = c.rel_change
    style = change_style(rel)
    out.append(f"Δ {fmt_float(rel)} ", style=style)
    out.append(bar(rel / top if rel is not None and top > 0 else None, BAR), style=style)
    out.append(f" cos {c.cosine:.6f}" if c.cosine is not None else " cos -", style="dim")
    out.append(f" max|d| {fmt_float(c.max_abs)}", style="dim")
    if c.over_tol is not None:
        out.append(f" over {c.over_tol:.1%}", style="dim")
    moved = [f"{n} {w}" for n, w in ((c.added, "added"), (c.removed, "removed")) if n]
    if moved:
        out.append("  " + ", ".join(moved), style="yellow")
    return out


def node_label(node: Node, two: bool, top: float = 0.0, root_name: str | None = None) -> Text:
    """A tree line: the module's name, its tensor count, size and kinds; with two checkpoints, its
    change figures first (the name coloured by how far it moved), or 'equal' when nothing in it changed."""
    moved = two and node.moved and node.change is not None
    style = f"bold {change_style(node.change.rel_change)}" if moved and node.change is not None else "bold"
    label = Text(escape(root_name if root_name is not None else node.name), style=style)
    if moved and node.change is not None:
        label.append("  ")
        label.append_text(change_text(node.change, top))
    elif two and node.change is not None:
        label.append("  equal", style="dim")
    label.append(f"  {node.tensors} tensors  {fmt_bytes(node.nbytes)} ", style="dim")
    for kind, n in node.kinds:
        label.append(f" {n} {SHORT_KIND.get(kind, kind)}", style=kind_style(kind))
    return label


def name_cell(e: Entry, module: str) -> Text:
    """An entry's name in the table: its path below `module`."""
    path = tree_path(e)
    return Text(escape(path[len(module) + 1:] if module else path))


def entry_cells(e: Entry, module: str, key: KeyDiff | None, two: bool) -> list[Text]:
    """A row of the tensor table: the name below `module`, kind, evidence, dtype, shape, size,
    device; with two checkpoints also the status and the tensor's change figures."""
    t = e.tensor
    cells = [name_cell(e, module), Text(str(e.kind), style=kind_style(e.kind)), Text(escape(str(e.evidence))),
             Text(t.dtype if t else escape(e.value_type or "-")), Text(fmt_shape(t.shape) if t else "-"),
             Text(fmt_bytes(t.nbytes) if t else "-", justify="right"), Text(escape(t.device) if t else "-")]
    if two:
        status = "" if key is None else str(key.status)
        rel = key.rel_change if key else None
        cells += [Text(status, style=STATUS_STYLES.get(status, "")),
                  Text(fmt_float(rel) if rel is not None else "", style=change_style(rel) if status == "changed" else "",
                       justify="right"),
                  Text(f"{key.cosine:.6f}" if key is not None and key.cosine is not None else "", justify="right"),
                  Text(fmt_float(key.max_abs) if key is not None and key.max_abs is not None else "", justify="right")]
    return cells


@dataclass(frozen=True)
class FittedTable:
    """The table a pane shows: the columns kept, their cells, and what moved out or went ('' when none)."""

    heads: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]
    note: str


def fit_table(rows: Sequence[Sequence[Text]], two: bool, width: int) -> FittedTable:
    """The rows of entry_cells fitted to `width` cells of text (cell padding aside) by grid.fit."""
    cols = COLUMNS + (DIFF_COLUMNS if two else ())
    title, kept, fitted, _ = fit("table", cols, [[c.plain for c in r] for r in rows], width)
    at = [cols.index(c) for c in kept]
    out = tuple(tuple(r[i] if s == r[i].plain else Text(s, style=r[i].style, justify=r[i].justify)
                      for i, s in zip(at, f)) for r, f in zip(rows, fitted))
    return FittedTable(tuple(c.head for c in kept), out, "" if title == "table" else title or "")
def gguf_line(view: Any, path: str) -> Text | None:
    """A GGUF's bits per weight for the module line: the model's (and file type) at the root, a
    block's (`blk.N`) with a bar against the block that spends the most; None elsewhere."""
    from ..render.human_gguf import bpw_text

    if view is None:
        return None
    if not path:
        return Text(f"GGUF {escape(str(view.file_type or '?'))}: {bpw_text(view.total)} bits/weight", style="bold")
    block = next((b for b in view.by_block if b.key == path), None)
    if block is None:
        return None
    top = scale([b.bits_per_weight for b in view.by_block])
    out = Text(f"{bpw_text(block)} bits/weight ")
    out.append(bar(block.bits_per_weight / top if top and block.bits_per_weight else None, 20), style="cyan")
    out.append(f"  {escape(', '.join(block.types))}", style="dim")
    return out


def entry_head(e: Entry, key: KeyDiff | None = None, hint: bool = True) -> Text:
    """The first lines of the detail pane: the full name and what the entry is."""
    t = e.tensor
    out = Text(escape(e.name), style="bold")
    out.append(f"\n{e.kind}", style=kind_style(e.kind))
    out.append(f" ({escape(str(e.evidence))})")
    if t is not None:
        out.append(f"  {t.dtype} {fmt_shape(t.shape)}  {fmt_count(t.numel)} elements  {fmt_bytes(t.nbytes)}  "
                   f"{escape(t.device)}")
    else:
        out.append(f"  {escape(e.value_type or '')}: {escape(str(e.value))[:200]}")
    if key is not None and key.changes:
        for f, (a, b) in key.changes.items():
            out.append(f"\n{f}: {escape(str(a))} -> {escape(str(b))}", style="yellow")
    if key is not None and key.note:
        out.append(f"\n{escape(key.note)}", style="yellow")
    if t is not None and hint:
        out.append("\npress s for its values (reads this tensor only)", style="dim")
    return out


def stats_text(r: ShowResult, side: str = "") -> Text:
    """One tensor's values in brief: moments, |x| percentiles, zeros/NaN/Inf, histogram, first values."""
    out = Text(f"{side}values", style="bold")
    s = r.stats
    if s is None or s.note is not None:
        out.append(f": {escape((s.note if s else None) or 'not a tensor')}")
        return out
    figures = [("min", s.min), ("max", s.max), ("mean", s.mean), ("std", s.std), ("|x| p50", s.p50_abs),
               ("|x| p99", s.p99_abs)]
    out.append("\n" + "  ".join(f"{k} {fmt_float(v)}" for k, v in figures))
    out.append(f"\nzeros {s.frac(s.zeros) or 0:.2%}  NaN {s.nan:,}  Inf {s.inf:,}",
               style="red" if s.nan or s.inf else "")
    if s.hist:
        out.append(f"\n{fmt_float(s.min)} ")
        out.append(spark(s.hist), style="cyan")
        out.append(f" {fmt_float(s.max)}")
    if r.first:
        out.append("\nfirst: " + ", ".join(fmt_float(v) if isinstance(v, float) else str(v) for v in r.first))
    return out
