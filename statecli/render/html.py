"""`--format html`: one self-contained page per result (inspect, size, diff, show) for CI artifacts
and review comments: inline CSS and SVG, no script, no URL, a CSP that forbids every fetch, names
HTML-escaped, the module tree collapsible with <details>."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..analyses.module_tree import ModuleTree, TreeNode, tree_path
from ..errors import UsageError
from ..io.stdin import shown_path
from ..state import DiffStatus, Entry, Stats
from ..units import fmt_bytes, fmt_count, fmt_shape
from ..vocab import SortOrder
from .charts import svg_bar_chart, svg_histogram
from .outcome import size_headline
from .text import FINITE_HEADS, escape, finite_cells, fmt_float, sample_note

if TYPE_CHECKING:
    from ..analyses.diff import DiffResult
    from ..analyses.inspect import InspectResult
    from ..analyses.show import ShowResult
    from ..analyses.size import SizeResult

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#555}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
table{border-collapse:collapse;margin:4px 0 12px}th,td{padding:2px 10px 2px 0;text-align:left;vertical-align:middle}
th{border-bottom:1px solid #999;font-weight:600}td{white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#f6f8fa}code,.name{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}
details{margin-left:16px}details>summary{cursor:pointer}details.root{margin-left:0}
.leaf{margin-left:32px;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px}.dim{color:#777}
svg.chart text{font:12px system-ui,sans-serif}svg.chart .ct{font-weight:600}svg.chart .cv{fill:#333}
.k-parameter{color:#1a7f37}.k-buffer{color:#0969da}.k-np{color:#3b4cc0}.k-optimizer{color:#8250df}
.k-attribute{color:#9a6700}.k-unknown{color:#cf222e}.s-changed{color:#cf222e}.s-added{color:#1a7f37}
.s-removed{color:#9a6700}.s-equal{color:#777}
"""
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_KIND_CLASS = {"parameter": "k-parameter", "buffer": "k-buffer", "buffer (non-persistent)": "k-np",
               "optimizer state": "k-optimizer", "tensor attribute": "k-attribute", "unknown": "k-unknown"}


class Raw(str):
    """Markup built here (never checkpoint text): passed through unescaped."""


def x(text: Any) -> str:
    """Checkpoint text as HTML: control characters made visible first, then markup escaped."""
    return text if isinstance(text, Raw) else html.escape(escape(str(text)), quote=True)


def table(heads: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Iterable[int] = ()) -> str:
    num = set(numeric)
    out = ["<table><tr>" + "".join(f'<th{" class=n" if i in num else ""}>{x(h)}</th>' for i, h in enumerate(heads))
           + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f'<td{" class=n" if i in num else ""}>{x(c)}</td>' for i, c in enumerate(r))
                   + "</tr>")
    out.append("</table>")
    return "".join(out)


def kind(k: str) -> Raw:
    return Raw(f'<span class="{_KIND_CLASS.get(k, "")}">{x(k)}</span>')


def tree(mt: ModuleTree, leaf: Callable[[Entry], Raw], sizes: bool = True) -> str:
    """A ModuleTree as nested <details> with each module's tensor count and bytes (or, without
    `sizes`, its key count), `leaf(entry)` after each entry's name; the root is open. A loop, not
    recursion: a name may have thousands of dots."""
    def head(node: TreeNode, label: str, top: bool = False) -> str:
        cls = mt.classes.get(node.path)
        cls_html = f' <span class="dim">({x(cls.rsplit(".", 1)[-1])})</span>' if cls else ""
        count = f"{node.tensors} tensors, {fmt_bytes(node.nbytes)}" if sizes else f"{node.keys} keys"
        return (f'<details{" class=root open" if top else ""}><summary><span class="name">{x(label)}</span>{cls_html} '
                f'<span class="dim">{count}</span></summary>')

    out = [head(mt.root, mt.label, top=True)]
    stack: list[list[Any]] = [[mt.root, 0]]
    while stack:
        frame = stack[-1]
        node, i = frame
        if i < len(node.children):
            frame[1] = i + 1
            sub = mt.nodes[node.children[i]]
            out.append(head(sub, sub.name))
            stack.append([sub, 0])
            continue
        for e in node.leaves:
            out.append(f'<div class="leaf">{x(tree_path(e).rsplit(".", 1)[-1])} {leaf(e)}</div>')
        out.append("</details>")
        stack.pop()
    return "".join(out)


def page(title: str, body: Sequence[str]) -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{x(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_html(result: Any, out: Any) -> None:
    """Write `result` as one HTML page; results without a page refuse the format."""
    builders: dict[str, Callable[[Any], tuple[str, list[str]]]] = {
        "InspectResult": _inspect, "SizeResult": _size, "DiffResult": _diff, "ShowResult": _show}
    build = builders.get(type(result).__name__)
    if build is None and hasattr(result, "html_page"):  # a result above the renderer builds its own (batch report)
        out.write(result.html_page())
        return
    if build is None:
        raise UsageError(None, "--format html is available for inspect, size, diff and show",
                         "use --format json or table here")
    title, body = build(result)
    out.write(page(title, body))


def _header(ck: Any, what: str) -> str:
    return (f"<h1>{x(what)}: <span class=name>{x(shown_path(ck))}</span></h1><p class=meta>{x(ck.format)}, model state: "
            f"<code>{x(ck.container_name)}</code>, {len(ck.entries)} entries</p>"
            + "".join(f"<p class=bad>warning: {x(w)}</p>" for w in ck.warnings)
            + "".join(f"<p class=meta>note: {x(n)}</p>" for n in ck.notes))


def _buckets(title: str, buckets: Sequence[Any], total: int) -> list[str]:
    items = [(b.key, b.nbytes / total if total else 0.0, f"{fmt_bytes(b.nbytes)} ({b.nbytes / total:.1%})"
              if total else fmt_bytes(b.nbytes)) for b in buckets]
    return [svg_bar_chart(items, f"bytes {title}"),
            table(["", "tensors", "numel", "size"], [[kind(b.key) if title == "by kind" else b.key, b.tensors,
                                                      fmt_count(b.numel), fmt_bytes(b.nbytes)] for b in buckets],
                  (1, 2, 3))]


def _stat_cells(s: Stats | None) -> list[Any]:
    if s is None or s.note is not None:
        return [(s.note if s else None) or "-"] + [""] * 9
    z = s.frac(s.zeros)
    mark = "" if s.exact else "*"
    return [fmt_float(v) for v in (s.min, s.max, s.mean, s.std)] + [fmt_float(v) + mark for v in (s.p50_abs, s.p99_abs)] + [
        "-" if z is None else f"{z:.1%}", s.nan, s.inf,
        Raw(svg_histogram(s.hist, title=f"{len(s.hist)} bins over [{fmt_float(s.finite_min)}, {fmt_float(s.finite_max)}]"
                          + ("" if s.exact else f", from a random sample of {s.sampled:,} values")) + mark)]


def _leaf(e: Entry) -> Raw:
    t = e.tensor
    assert t is not None
    return Raw(f"{kind(e.kind)} <span class=dim>{x(t.dtype)} {x(fmt_shape(t.shape))} {fmt_bytes(t.nbytes)}</span>")


def _gguf(v: Any) -> list[str]:
    """A GGUF's totals (gguf_view.GgufView): bits per weight by GGML type and by block, as bars."""
    from .human_gguf import bpw_text as bpw

    if v is None:
        return []
    out = [f"<h2>GGUF v{v.version}: {x(v.architecture or '?')}, file type {x(v.file_type or '?')}, "
           f"{bpw(v.total)} bits/weight overall</h2>"]
    for title, rows in (("by GGML type", v.by_type), ("by block", v.by_block)):
        out.append(svg_bar_chart([(t.key, t.bits_per_weight, f"{bpw(t)} bits/weight") for t in rows], f"bits/weight {title}"))
        out.append(table([title[3:], "tensors", "params", "size", "bits/weight", "types"],
                         [[t.key, t.tensors, fmt_count(t.numel), fmt_bytes(t.nbytes), bpw(t), " ".join(t.types)]
                          for t in rows], (1, 2, 3, 4)))
    return out


def _inspect(r: InspectResult) -> tuple[str, list[str]]:
    ck = r.checkpoint
    tensors = [e for e in r.entries if e.tensor is not None]
    body = [_header(ck, "inspect"), *_gguf(r.gguf), "<h2>summary (shared storage counted once)</h2>"]
    for title, buckets in (("by kind", r.by_kind), ("by dtype", r.by_dtype), ("by device", r.by_device)):
        body += _buckets(title, buckets, r.total.nbytes)
    body.append("<h2>module tree</h2>")
    body.append(tree(r.module_tree(), _leaf))
    heads = ["name", "kind", "evidence", "dtype", "shape", "numel", "size", "device"]
    stat_heads = ["min", "max", "mean", "std", "|x| p50", "|x| p99", "zeros", "nan", "inf", "histogram"]
    read = [s for s in r.stats.values() if s.note is None]
    finite = any(s.has_non_finite for s in read)
    stat_heads += FINITE_HEADS if finite else []
    rows = []
    for e in tensors:
        t = e.tensor
        assert t is not None
        row: list[Any] = [Raw(f"<span class=name>{x(e.name)}</span>"), kind(e.kind), str(e.evidence), t.dtype,
                          fmt_shape(t.shape), f"{t.numel:,}", fmt_bytes(t.nbytes), t.device]
        if r.stats:
            row += _stat_cells(r.stats.get(e.name)) + (finite_cells(r.stats.get(e.name)) if finite else [])
        rows.append(row)
    body.append(f"<h2>tensors ({len(rows)})</h2>")
    body.append(table(heads + (stat_heads if r.stats else []), rows, (5, 6, *range(8, 17), *range(18, 22))))
    note = sample_note(read)
    if note:
        body.append(f"<p>{x(note)}</p>")
    values = [e for e in r.entries if e.tensor is None]
    if values:
        body.append(f"<h2>values ({len(values)})</h2>")
        body.append(table(["name", "type", "value"], [[e.name, e.value_type or "", str(e.value)[:300]] for e in values]))
    return f"statecli inspect {shown_path(ck)}", body


def _size(r: SizeResult) -> tuple[str, list[str]]:
    ck = r.checkpoint
    body = [_header(ck, "size"),
            "".join(f"<p>{x(line)}</p>" for line in size_headline(r))
            + (f"<p>shared storage counted once (saves {fmt_bytes(r.duplicate_nbytes)})</p>" if r.duplicate_nbytes
               else ""), *_gguf(r.gguf), f"<h2>by module (depth {r.depth})</h2>",
            svg_bar_chart([(m.module, m.share, f"{fmt_bytes(m.bucket.nbytes)} ({m.share:.1%})") for m in r.by_module],
                          f"bytes by module, depth {r.depth}"),
            table(["module", "tensors", "numel", "size", "share"],
                  [[m.module, m.bucket.tensors, fmt_count(m.bucket.numel), fmt_bytes(m.bucket.nbytes), f"{m.share:.1%}"]
                   for m in r.by_module], (1, 2, 3, 4))]
    for title, buckets in (("by kind", r.by_kind), ("by dtype", r.by_dtype), ("by device", r.by_device)):
        body.append(f"<h2>{title}</h2>")
        body += _buckets(title, buckets, r.total.nbytes)
    if r.top:
        body.append(f"<h2>largest {len(r.top)} tensors</h2>")
        body.append(table(["name", "kind", "dtype", "shape", "size"],
                          [[e.name, kind(e.kind), e.tensor.dtype, fmt_shape(e.tensor.shape), fmt_bytes(e.tensor.nbytes)]
                           for e in r.top if e.tensor is not None], (4,)))
    body.append("<h2>module tree</h2>")
    body.append(tree(r.module_tree(), _leaf))
    return f"statecli size {shown_path(ck)}", body


def _diff(r: DiffResult) -> tuple[str, list[str]]:
    body = [f"<h1>diff: <span class=name>{x(shown_path(r.a))}</span> vs <span class=name>{x(shown_path(r.b))}</span></h1>",
            f"<p class=meta>A: {x(r.a.format)}, model state <code>{x(r.a.container_name)}</code>; "
            f"B: {x(r.b.format)}, model state <code>{x(r.b.container_name)}</code>; rtol={r.rtol:g}, "
            f"atol={r.atol:g}, equal_nan={r.equal_nan}</p>",
            f"<p class={'ok' if r.equal else 'bad'}>{x(r.summary_line)}</p>"]
    body += [f"<p class=meta>hint: {x(h)}</p>" for h in r.renames]
    body += [f"<p class=meta>note: {x(n.text)}</p>" for n in r.notes]
    if r.modules:
        order = "model order" if r.sort is SortOrder.ORDER else f"sorted by {r.sort}"
        body.append(f"<h2>change by module (depth {r.depth}, {order})</h2>")
        body.append(svg_bar_chart([(m.module, m.rel_change, "-" if m.rel_change is None else fmt_float(m.rel_change))
                                   for m in r.modules], "relative change ||b-a|| / ||a||", color="#e45756"))
        snr = ["SNR dB"] if r.quantized else []  # a quantized side: the error in dB, per module
        body.append(table(["module", "keys", "changed", "added", "removed", "|b-a|/|a|", "cosine", "max |d|", "over tol",
                           *snr],
                          [[m.module, m.keys, m.changed, m.added, m.removed, fmt_float(m.rel_change),
                            "-" if m.cosine is None else f"{m.cosine:.6f}", fmt_float(m.max_abs),
                            "-" if m.over_tol is None else f"{m.over_tol:.1%}",
                            *(["-" if m.snr_db is None else f"{m.snr_db:.2f}"] if snr else [])] for m in r.modules],
                          range(1, 9 + len(snr))))
    changed = [k for k in r.keys if k.status != DiffStatus.EQUAL]
    if changed:
        body.append(f"<h2>changed keys ({len(changed)})</h2>")
        body.append(table(["name", "status", "changes", "max abs", "max rel", "over tol", "of", "note"],
                          [[Raw(f"<span class=name>{x(k.name)}</span>"),
                            Raw(f'<span class="s-{x(k.status)}">{x(k.status)}</span>'),
                            "; ".join(f"{f}: {a} -> {b}" for f, (a, b) in k.changes.items()), fmt_float(k.max_abs),
                            fmt_float(k.max_rel), "" if k.mismatched is None else f"{k.mismatched:,}",
                            "" if k.numel is None else f"{k.numel:,}", k.note or ""] for k in changed], (3, 4, 5, 6)))
    body.append("<h2>keys by module</h2>")
    def status(e: Entry) -> Raw:
        k = r.by_name[e.name]
        return Raw(f'<span class="s-{x(k.status)}">{x(k.status)}</span>'
                   + ("" if k.rel_change is None else f" <span class=dim>|b-a|/|a| {fmt_float(k.rel_change)}</span>"))

    body.append(tree(r.tree, status, sizes=False))
    return f"statecli diff {shown_path(r.a)} {shown_path(r.b)}", body


def _show(r: ShowResult) -> tuple[str, list[str]]:
    ck, e = r.checkpoint, r.entry
    body = [_header(ck, "show"), f"<h2 class=name>{x(e.name)}</h2>"]
    t = e.tensor
    if t is not None:
        body.append(f"<p>{kind(e.kind)} ({x(e.evidence)}) {x(t.dtype)} {x(fmt_shape(t.shape))}, {t.numel:,} elements, "
                    f"{fmt_bytes(t.nbytes)}, {x(t.device)}</p>")
    body.append(table(["module", "tensors", "numel", "size"],
                      [[lv.path, lv.tensors, fmt_count(lv.numel), fmt_bytes(lv.nbytes)] for lv in r.path], (1, 2, 3)))
    s = r.stats
    if s is not None and s.note is None:
        body.append(table(["min", "max", "mean", "std", "|x| p50", "|x| p99", "zeros", "nan", "inf", ""],
                          [_stat_cells(s)[:9] + [""]], range(9)))
        edges = r.edges()
        body.append(f"<h2>histogram ({len(s.hist)} bins from {fmt_float(edges[0])} to {fmt_float(edges[-1])})</h2>")
        body.append(svg_histogram(s.hist, width=720, height=160, title="histogram of the finite values"))
        first = ", ".join(fmt_float(v) if isinstance(v, float) else str(v) for v in r.first)
        body.append(f"<p>first {len(r.first)}: <code>{x(first)}</code></p>")
        for title, xs in (("smallest", r.smallest), ("largest", r.largest)):
            body.append(f"<p>{title}: <code>{x(', '.join(f'{fmt_float(v.value)} at {list(v.index)}' for v in xs))}</code></p>")
    elif s is not None:
        body.append(f"<p>{x(s.note)}</p>")
    else:
        body.append(f"<p>value ({x(e.value_type or '')}): <code>{x(e.value)}</code></p>")
    return f"statecli show {shown_path(ck)} {e.name}", body
