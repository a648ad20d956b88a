"""The human views of size, diff, check and scan: rich text and tables, names escaped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..io.stdin import shown_path
from ..state import Container, DiffStatus, Verdict
from ..units import fmt_bytes, fmt_count, fmt_shape
from ..vocab import CheckRule, SortOrder
from .grid import KIND_STYLES, Col, bar_room, print_grid
from .outcome import check_outcome, scan_outcome, size_headline
from .text import escape, fmt_float

if TYPE_CHECKING:
    from ..analyses.check import CheckResult
    from ..analyses.diff import DiffResult
    from ..analyses.scan import ScanReport
    from ..analyses.size import SizeResult



def _module_label(module: str, others: Sequence[Container]) -> str:
    """A by-module row's name; a row of another container (optimizer, EMA...) says so: it is not a module."""
    for c in others:
        if module == c.name or module.startswith(c.name + "."):
            return f"{module} ({c.role} container)"
    return module

def render_size(r: SizeResult, con: Any) -> None:
    from rich.text import Text

    ck = r.checkpoint
    con.print(Text(f"{escape(shown_path(ck))}  {ck.format}", style="bold"))
    for line in size_headline(r):
        con.print(Text(line))
    for line in r.memory.lines() if r.memory is not None else ():
        con.print(Text(line, style="bold"))
    if r.duplicate_nbytes:
        con.print(Text(f"shared storage counted once: {fmt_bytes(r.duplicate_nbytes)} would be duplicated if every "
                       f"tensor owned its bytes"))
    if r.outside_nbytes:
        con.print(Text(f"{fmt_bytes(r.outside_nbytes)} of saved storage lies outside every tensor view (a slice of a "
                       "larger tensor saves the whole storage; .clone() before saving to drop it)"))
    from .charts import bar

    # Bars are shares of the distinct storage bytes, so a shared storage is drawn once (its first module).
    # At a narrow terminal a bar takes what the figures leave (none under BAR_MIN cells); names stay whole.
    cols = [Col("module", key=True), *(Col(h, right=True) for h in ("tensors", "numel", "size", "share"))]
    rows = [[escape(_module_label(m.module, r.others)), str(m.bucket.tensors), fmt_count(m.bucket.numel),
             fmt_bytes(m.bucket.nbytes), f"{m.share:.1%}"] for m in r.by_module]
    room = bar_room(con, cols, rows, 30)
    print_grid(con, f"by module (depth {r.depth})", [*cols, Col("")],
               [[*row, bar(m.share, room)] for row, m in zip(rows, r.by_module)])
    for title, buckets in (("by kind", r.by_kind), ("by dtype", r.by_dtype), ("by device", r.by_device)):
        shares = [b.nbytes / r.total.nbytes if r.total.nbytes else 0.0 for b in buckets]
        cols = [Col(""), *(Col(h, right=True) for h in ("tensors", "numel", "size", "share"))]
        rows = [[escape(b.key), str(b.tensors), fmt_count(b.numel), fmt_bytes(b.nbytes), f"{f:.1%}"]
                for b, f in zip(buckets, shares)]
        room = bar_room(con, cols, rows, 30) if title != "by device" else 0
        print_grid(con, title, [*cols, Col("")], [[*row, bar(f, room)] for row, f in zip(rows, shares)],
                   {0: KIND_STYLES} if title == "by kind" else None)
    if r.quant is not None:
        from .human_inspect import quant_tables

        quant_tables(con, r.quant)
    if r.gguf is not None:
        from .human_gguf import render_gguf_totals

        render_gguf_totals(r.gguf, con, blocks=True)
    if r.top:
        rows = [[escape(e.name), e.kind, e.tensor.dtype, fmt_shape(e.tensor.shape), fmt_bytes(e.tensor.nbytes)]
                for e in r.top if e.tensor is not None]
        print_grid(con, f"largest {len(r.top)} tensors", [Col("name", key=True), Col("kind"), Col("dtype"),
                   Col("shape", wrap=True), Col("size", right=True)], rows, {1: KIND_STYLES})


def render_diff(r: DiffResult, con: Any) -> None:
    from rich.text import Text

    for side, ck, left in (("A", r.a, r.left_out[0]), ("B", r.b, r.left_out[1])):
        line = f"{side} {escape(shown_path(ck))} ({ck.format}), model state: {escape(ck.container_name)}"
        if left:
            line += f"; not compared: {escape(', '.join(left))} (--all compares them)"
        con.print(Text(line))
    for status, title in ((DiffStatus.REMOVED, "only in A (removed)"), (DiffStatus.ADDED, "only in B (added)"),
                          (DiffStatus.FOLDED, "folded by the exporter (BatchNorm merged into the layer before it)")):
        keys = [k for k in r.keys if k.status == status]
        if keys:
            con.print(Text(f"{title}: {len(keys)}", style="bold"))
            for k in keys[:200]:
                con.print(Text(f"  {'+' if status == DiffStatus.ADDED else '-'} {escape(k.name)}"))
            if len(keys) > 200:
                con.print(f"  ... {len(keys) - 200} more")
    if r.metadata:
        rows = [[escape(m.key), m.status, escape(m.a or ""), escape(m.b or "")] for m in r.metadata]
        print_grid(con, f"GGUF metadata ({len(r.metadata)} differ)", [Col("key", wrap=True), Col("status"),
                   Col("A", wrap=True), Col("B", wrap=True)], rows)
    paired = [k for k in r.keys if k.note and k.note.startswith("matched by")]  # ONNX initializers renamed
    if paired:
        con.print(Text(f"renamed by the exporter, paired: {len(paired)}", style="bold"))
        for k in paired[:200]:
            con.print(Text(f"  {escape(k.name)}: {escape(k.note or '')}"))
    structural = [k for k in r.keys if k.status == DiffStatus.CHANGED and k.changes]
    if structural:
        rows = [[escape(k.name), f, escape(str(a)), escape(str(b))] for k in structural for f, (a, b) in k.changes.items()]
        print_grid(con, f"changed structure ({len(structural)})", [Col("name", key=True), Col("field"),
                   Col("A", wrap=True), Col("B", wrap=True)], rows)
    valued = [k for k in r.keys if k.mismatched]
    if r.modules and (r.by_module or valued):
        render_module_changes(r, con)
    if valued and not r.by_module:
        rows = []
        for k in valued:
            note = "; ".join(x for x in (f"compared as {k.compared_as}" if k.compared_as else "", k.note or "") if x)
            rows.append([escape(k.name), fmt_float(k.max_abs), fmt_float(k.max_rel), f"{k.mismatched:,}",
                         f"{k.numel:,}" if k.numel is not None else "", escape(note)])
        print_grid(con, f"changed values ({len(valued)}; rtol={r.rtol:g}, atol={r.atol:g}, equal_nan={r.equal_nan})",
                   [Col("name", key=True), *(Col(h, right=True) for h in ("max abs", "max rel", "over tol", "of")),
                    Col("note", wrap=True)], rows)
    if r.gguf_reference:
        from .human_gguf import render_quant_error

        render_quant_error(r.quantization_error, con)
    for h in r.renames:
        con.print(Text("hint: " + escape(h), style="cyan"))
    style = "bold green" if r.equal else "bold red"
    con.print(Text(r.summary_line, style=style))


def render_module_changes(r: DiffResult, con: Any) -> None:
    """One row per module: how far its values moved, as a bar scaled to the module that moved most."""
    from .charts import bar, scale

    top = scale([m.rel_change for m in r.modules])
    structural = any(m.added or m.removed for m in r.modules)
    # A quantized side: the error's size in dB (A, the source, over B - A) tells how much each module lost.
    quantized = r.quantized
    rows = []
    for m in r.modules:
        rel = m.rel_change
        frac = None if rel is None else 1.0 if rel == float("inf") else rel / top if top else 0.0
        row = [escape(m.module), str(m.keys), str(m.changed)]
        if structural:
            row += [str(m.added), str(m.removed)]
        row += ["-" if rel is None else fmt_float(rel), bar(frac, 24),
                "-" if m.cosine is None else f"{m.cosine:.6f}", fmt_float(m.max_abs),
                "-" if m.over_tol is None else f"{m.over_tol:.1%}"]
        if quantized:
            row.append("-" if m.snr_db is None else f"{m.snr_db:.2f}")
        rows.append(row)
    heads = ["keys", "changed"] + (["added", "removed"] if structural else [])
    # Least important first at narrow widths (grid.fit): the bar, then the key count, max |d|, over tol.
    cols = [Col("module", key=True), *(Col(h, right=True, drop=3 if h == "keys" else 0) for h in heads),
            Col("|b-a|/|a|", right=True), Col("", drop=5),
            *(Col(h, right=True, drop={"max |d|": 2, "over tol": 1}.get(h, 0))
              for h in ("cosine", "max |d|", "over tol") + (("SNR dB",) if quantized else ()))]
    order = "model order" if r.sort is SortOrder.ORDER else f"sorted by {r.sort}"
    depth = f"depth {r.depth}" if r.depth else "by block"
    print_grid(con, f"change by module ({depth}, {order}; rtol={r.rtol:g}, atol={r.atol:g})", cols, rows)


def render_check(r: CheckResult, con: Any) -> None:
    from rich.text import Text

    for src in dict.fromkeys(src for _, src in r.rules_from):
        con.print(Text(f"rules: {escape(src)}", style="dim"))
    rows = [[escape(f.path), f.rule, "pass" if f.passed else "FAIL", escape(f.reason)] for f in r.findings]
    rows += [[escape(p), CheckRule.READ, "ERROR", escape(m)] for p, m in r.errors]
    rows += [[escape(p), CheckRule.UNSAFE, "UNSAFE", escape(m)] for p, m in r.unsafe]
    print_grid(con, None, [Col("file", key=True), Col("rule"), Col("result"), Col("reason", wrap=True, min_width=20)],
               rows, {2: {"pass": "green", "FAIL": "bold red", "ERROR": "bold red", "UNSAFE": "bold red"}})
    con.print(Text(check_outcome(r), style="bold green" if r.passed else "bold red"))


def render_scan(report: ScanReport, con: Any) -> None:
    from rich.text import Text

    results = report.files
    styles = {"safe": "bold green", "needs-trust": "bold yellow", "dangerous": "bold red", "malformed": "bold red"}
    for r in results:
        # A file beside a folder checkpoint that its loader does not read: its verdict counts only with --strict
        beside = "" if report.counts(r) else "  [beside the checkpoint; counts with --strict]"
        if r.error and not (r.globals or r.calls or r.unsafe_content):  # nothing was judged (exit 2)
            con.print(Text(f"{escape(r.path)}  ") + Text("unreadable", style="bold red") + Text(f"  {escape(r.error)}")
                      + Text(beside, style="dim"))
            continue
        con.print(Text(f"{escape(r.path)}  {r.format or ''}  ") + Text(r.verdict, style=styles[r.verdict])
                  + Text(f"  ({r.pickles} pickle(s), {len(r.globals)} global reference(s))") + Text(beside, style="dim"))
        if r.error:  # unreadable as a checkpoint, but what was read is still listed below
            con.print(Text("  unreadable: ", style="bold red") + Text(escape(r.error)))
        seen: dict[str, tuple[str, set[str]]] = {}
        for g in r.globals:
            seen.setdefault(g.name, (g.verdict, set()))[1].add(g.where)
        hidden = 0
        for name, (verdict, wheres) in sorted(seen.items(), key=lambda x: (-Verdict(x[1][0]).rank, x[0])):
            if verdict == "safe" and len(seen) > 12:
                hidden += 1
                continue
            con.print(Text(f"  {verdict:<12}", style=styles[verdict]) + Text(escape(name))
                      + Text(f"  in {escape(', '.join(sorted(wheres))[:120])}", style="dim"))
        if hidden:
            con.print(Text(f"  ... and {hidden} safe (weights-only allowlisted) globals; --format json lists all",
                           style="dim"))
        for o, c, w in r.calls[:50]:
            con.print(Text(f"  call {o} {escape(c)} in {escape(w)}"))
        if len(r.calls) > 50:
            con.print(Text(f"  ... and {len(r.calls) - 50} more calls; --format json lists all", style="dim"))
        if r.code:  # the source the TorchScript class names compile to: what trusting the file runs
            con.print(Text(f"  TorchScript code: {escape(', '.join(r.code)[:200])}"))
        for p in r.templates:
            con.print(Text("  dangerous: " + escape(p), style="bold red"))
        for p in r.problems:
            con.print(Text("  malformed: " + escape(p), style="red"))
    if len(results) > 1:
        con.print(Text(scan_outcome(report), style="bold"))
    uncounted = [r for r in results if not report.counts(r) and r.exit_code]
    if uncounted:  # exit 0 must not read as "the whole folder is clean"
        con.print(Text(f"{len(uncounted)} file(s) beside a folder checkpoint are not safe; its loader does not read "
                       "them, so they count in the exit code only with --strict", style="bold yellow"))
