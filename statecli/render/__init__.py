"""Rendering: rich tables and trees for people, JSON/CSV/Markdown for machines; the only place that
prints. Names from a checkpoint are data: they are escaped and never parsed as markup."""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from ..state import DiffStatus, Entry, ModuleNode, Role
from ..units import fmt_bytes, fmt_count, fmt_shape

if TYPE_CHECKING:  # each command imports only what it renders
    from ..analyses.check import CheckResult
    from ..analyses.diff import DiffResult, KeyDiff
    from ..analyses.inspect import Bucket, InspectResult, Stats
    from ..analyses.scan import ScanResult
    from ..analyses.size import SizeResult
    from ..rewrite.ops import RewriteResult

_TABLE: dict[str, Any] = {"show_edge": False, "pad_edge": False, "box": None, "padding": (0, 2, 0, 0),
                          "header_style": "bold underline"}
FAST_ROWS = 200  # above this many rows a plain aligned table replaces rich.Table (~0.8 ms a row here)


def escape(text: str) -> str:
    """Make a checkpoint-supplied string safe for a terminal: control, format (bidi) and other
    non-printing characters become visible escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif unicodedata.category(ch)[0] in "CZ" or not ch.isprintable():
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _fmt_float(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


# -- data (shared by every format) ---------------------------------------------------------------

def entry_dict(e: Entry, stats: Stats | None = None) -> dict[str, Any]:
    t = e.tensor
    d: dict[str, Any] = {"name": e.name, "group": e.group or None, "kind": e.kind, "evidence": str(e.evidence)}
    if t is None:
        d.update(dtype=None, shape=None, numel=None, nbytes=None, device=None, value=e.value, type=e.value_type)
        return d
    d.update(dtype=t.dtype, shape=list(t.shape), numel=t.numel, nbytes=t.nbytes, device=t.device, layout=t.layout,
             storage=t.storage_key, storage_offset=t.storage_offset,
             stride=list(t.stride) if t.stride is not None else None, contiguous=t.is_contiguous)
    if t.subclass:
        d["subclass"] = t.subclass
    if stats is not None:
        d["stats"] = {"min": stats.min, "max": stats.max, "mean": stats.mean, "std": stats.std,
                      "nan": stats.nan, "inf": stats.inf, "note": stats.note}
    return d


def _bucket_dict(b: Bucket) -> dict[str, Any]:
    return {"tensors": b.tensors, "numel": b.numel, "nbytes": b.nbytes}


def inspect_dict(r: InspectResult) -> dict[str, Any]:
    ck = r.checkpoint
    return {
        "path": ck.path,
        "format": ck.format,
        "container": ck.container,
        "containers": [{"name": c.name, "role": c.role, "entries": c.entries, "tensors": c.tensors, "nbytes": c.nbytes}
                       for c in ck.containers],
        "files": ck.files,
        "metadata": ck.metadata,
        "warnings": ck.warnings,
        "notes": ck.notes,
        "unsafe_globals": ck.unsafe_globals,
        "summary": {
            "total": _bucket_dict(r.total) | {"view_nbytes": r.view_nbytes},
            "by_kind": {b.key: _bucket_dict(b) for b in r.by_kind},
            "by_dtype": {b.key: _bucket_dict(b) for b in r.by_dtype},
            "by_device": {b.key: _bucket_dict(b) for b in r.by_device},
            "shared": [{"storage": s.storage, "names": list(s.names), "nbytes": s.nbytes} for s in r.shared],
        },
        "entries": [entry_dict(e, r.stats.get(e.name)) for e in r.entries],
    } | _model_dict(r)


def _model_dict(r: InspectResult) -> dict[str, Any]:
    if r.model is None:
        return {}
    lines = r.load_report or []
    return {
        "model": {"spec": r.model.spec, "class": r.model.class_name, "built_on": r.model.built_on,
                  "modules": module_nodes_dict(r.model.modules)},
        "load_report": [{"key": x.key, "problem": x.problem, "explanation": x.explanation, "fix": x.fix,
                         "blocking": x.blocking} for x in lines],
        "loads_strictly": not any(x.blocking for x in lines),
    }


# -- machine formats -----------------------------------------------------------------------------

COLUMNS = ("name", "group", "kind", "evidence", "dtype", "shape", "numel", "nbytes", "device", "layout", "storage")
STAT_COLUMNS = ("min", "max", "mean", "std", "nan", "inf")


def _row(d: dict[str, Any], stats: bool) -> list[str]:
    row = []
    for c in COLUMNS:
        v = d.get(c)
        if c == "shape":
            v = fmt_shape(v) if v is not None else ""
        elif c == "dtype" and v is None:
            v = d.get("type") or ""
        row.append(escape("" if v is None else str(v)))
    if stats:
        st = d.get("stats") or {}
        row += [escape("" if st.get(c) is None else str(st.get(c))) for c in STAT_COLUMNS]
    return row


def write_json(data: Any, out: IO[str]) -> None:
    # Indented output goes through json's pure-Python encoder (~70 ms per 1,000 entries); big
    # listings use the C encoder with one entry per line instead.
    entries = data.get("entries") if isinstance(data, dict) else None
    if isinstance(entries, list) and len(entries) > 500:
        head = {k: v for k, v in data.items() if k != "entries"}
        text = json.dumps(head, allow_nan=False, default=str)[:-1]
        out.write(text + (', ' if head else '') + '"entries": [\n')
        out.write(",\n".join(json.dumps(e, allow_nan=False, default=str) for e in entries))
        out.write("\n]}\n")
        return
    json.dump(data, out, indent=2, allow_nan=False, default=str)
    out.write("\n")


def write_csv(r: InspectResult, out: IO[str]) -> None:
    stats = bool(r.stats)
    w = csv.writer(out, lineterminator="\n")
    w.writerow(list(COLUMNS) + (list(STAT_COLUMNS) if stats else []))
    for e in r.entries:
        w.writerow(_row(entry_dict(e, r.stats.get(e.name)), stats))


def write_markdown(r: InspectResult, out: IO[str]) -> None:
    stats = bool(r.stats)
    cols = list(COLUMNS) + (list(STAT_COLUMNS) if stats else [])
    out.write(f"# {_md(r.checkpoint.path)} ({r.checkpoint.format})\n\n")
    out.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
    for e in r.entries:
        out.write("| " + " | ".join(_md(c) for c in _row(entry_dict(e, r.stats.get(e.name)), stats)) + " |\n")
    out.write("\n| kind | tensors | numel | bytes |\n|---|---|---|---|\n")
    for b in r.by_kind:
        out.write(f"| {_md(b.key)} | {b.tensors} | {b.numel} | {b.nbytes} |\n")


def _md(s: str) -> str:
    return escape(s).replace("|", "\\|")


# -- rich output ---------------------------------------------------------------------------------

def _console(out: IO[str] | None = None, err: bool = False) -> Any:
    import os
    import sys

    from rich.console import Console

    stream = out or (sys.stderr if err else sys.stdout)
    # Piped output is read by people later or by grep: do not squeeze it into 80 columns.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(file=stream, highlight=False, soft_wrap=False, width=width)


def print_warnings(ck_warnings: list[str], notes: list[str], out: IO[str] | None = None) -> None:
    if not ck_warnings and not notes:
        return  # and rich is never imported on the JSON path
    from rich.text import Text

    con = _console(out, err=out is None)
    for w in ck_warnings:
        con.print(Text("warning: ", style="bold yellow") + Text(escape(w)))
    for n in notes:
        con.print(Text("note: ", style="bold cyan") + Text(escape(n)))


def render_inspect(r: InspectResult, fmt: str, tree: bool, out: IO[str] | None = None) -> None:
    if fmt == "json":
        import sys

        write_json(inspect_dict(r), out or sys.stdout)
        return
    if fmt in ("csv", "md"):
        import sys

        (write_csv if fmt == "csv" else write_markdown)(r, out or sys.stdout)
        return
    con = _console(out)
    _header(con, r)
    if tree and r.model is not None:
        _model_tree(con, r)
    elif tree:
        _tree(con, r)
    else:
        _tables(con, r, out)
    _summary(con, r)
    if r.model is not None:
        _load_report(con, r)
    print_warnings(r.checkpoint.warnings, r.checkpoint.notes, out)


def _header(con: Any, r: InspectResult) -> None:
    from rich.text import Text

    ck = r.checkpoint
    t = Text()
    t.append(escape(ck.path), style="bold")
    t.append(f"  {ck.format}")
    if len(ck.files) > 1:
        t.append(f", {len(ck.files) - 1} data files + {'index' if ck.path.endswith('.json') else '.metadata'}")
    t.append(f"  model state: {escape(ck.container or '(root)')}")
    con.print(t)
    others = [c for c in ck.containers if c.role != Role.MODEL]
    if others:
        con.print(Text("other containers: " + ", ".join(
            f"{escape(c.name)} ({c.role}, {c.tensors} tensors, {c.entries - c.tensors} values)" for c in others)))


def _tables(con: Any, r: InspectResult, out: IO[str] | None) -> None:
    groups: dict[str, list[Entry]] = {}
    for e in r.entries:
        groups.setdefault(e.group, []).append(e)
    for g, es in groups.items():
        tensors = [e for e in es if e.tensor is not None]
        values = [e for e in es if e.tensor is None]
        title = "model state" if g == "" else g
        if tensors:
            _tensor_table(con, title, tensors, r.stats, out)
        if values:
            _value_table(con, f"{title}: values", values)


def _tensor_table(con: Any, title: str, entries: list[Entry], stats: dict[str, Stats], out: IO[str] | None) -> None:
    from rich.table import Table
    from rich.text import Text

    heads = ["name", "kind", "evidence", "dtype", "shape", "numel", "size", "device"]
    if stats:
        heads += ["min", "max", "mean", "std", "nan", "inf"]
    rows = []
    for e in entries:
        t = e.tensor
        assert t is not None
        dev = t.device + (f" ({t.layout})" if t.layout != "strided" else "")
        row = [escape(e.name), e.kind, str(e.evidence), t.dtype, fmt_shape(t.shape), f"{t.numel:,}", fmt_bytes(t.nbytes), dev]
        if stats:
            s = stats.get(e.name)
            row += ([_fmt_float(s.min), _fmt_float(s.max), _fmt_float(s.mean), _fmt_float(s.std), str(s.nan), str(s.inf)]
                    if s and s.note is None else [(s.note if s else None) or "-", "", "", "", "", ""])
        rows.append(row)
    if len(rows) > FAST_ROWS:
        _plain_table(con, f"{title} ({len(rows)} tensors)", heads, rows)
        return
    table = Table(title=Text(f"{escape(title)} ({len(rows)} tensors)"), title_justify="left", **_TABLE)
    name_width = min(max(len(r[0]) for r in rows), 48)
    for h in heads:
        table.add_column(h, justify="right" if h in ("numel", "size", "nan", "inf") else "left",
                         overflow="fold", no_wrap=h not in ("name", "evidence", "kind"),
                         min_width=name_width if h == "name" else None)
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    con.print(table)


def _plain_table(con: Any, title: str, heads: list[str], rows: list[list[str]]) -> None:
    """A fast aligned listing for big checkpoints: one write per line, no layout engine."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    con.file.write("\n".join(lines) + "\n")


def _value_table(con: Any, title: str, entries: list[Entry]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(escape(title)), title_justify="left", **_TABLE)
    table.add_column("name", overflow="fold")
    table.add_column("type")
    table.add_column("value", overflow="fold")
    for e in entries:
        value = json.dumps(e.value, default=str) if not isinstance(e.value, str) else e.value
        if len(value) > 160:
            value = value[:157] + "..."
        table.add_row(Text(escape(e.name)), Text(escape(e.value_type or "")), Text(escape(value)))
    con.print(table)


def _summary(con: Any, r: InspectResult) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="summary (shared storage counted once)", title_justify="left", **_TABLE)
    for h in ("by", "", "tensors", "numel", "size"):
        table.add_column(h, justify="right" if h in ("tensors", "numel", "size") else "left")
    for label, buckets in (("kind", r.by_kind), ("dtype", r.by_dtype), ("device", r.by_device)):
        for i, b in enumerate(buckets):
            table.add_row(label if i == 0 else "", Text(escape(b.key)), str(b.tensors), fmt_count(b.numel), fmt_bytes(b.nbytes),
                          end_section=i == len(buckets) - 1)
    table.add_row("total", "", str(r.total.tensors), fmt_count(r.total.numel), fmt_bytes(r.total.nbytes))
    con.print(table)
    if r.shared:
        con.print(Text(f"shared storage ({len(r.shared)}): tied or view tensors, bytes counted once", style="bold"))
        for s in r.shared[:20]:
            con.print(Text(f"  {fmt_bytes(s.nbytes):>10}  " + " = ".join(escape(n) for n in s.names)))
        if len(r.shared) > 20:
            con.print(f"  ... {len(r.shared) - 20} more")
        con.print(Text(f"tensor bytes as views {fmt_bytes(r.view_nbytes)}, distinct storage {fmt_bytes(r.total.nbytes)}"))
    if r.total.nbytes > r.view_nbytes:
        con.print(Text(f"the saved storage ({fmt_bytes(r.total.nbytes)}) is larger than the tensors "
                       f"({fmt_bytes(r.view_nbytes)}): slices of larger tensors save their whole storage"))


def _tree(con: Any, r: InspectResult) -> None:
    """The module hierarchy with per-module totals; leaves are tensors."""
    from rich.text import Text
    from rich.tree import Tree

    classes = {m.path: m.class_name for m in r.checkpoint.modules}
    root: dict[str, Any] = {}
    for e in r.entries:
        if e.tensor is None:
            continue
        parts = ([e.group] if e.group else []) + e.name.split(".")
        if e.group and e.name.startswith(e.group + "."):
            parts = e.name.split(".")
        node = root
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node.setdefault("\0leaves", []).append((parts[-1], e))

    def totals(node: dict[str, Any]) -> tuple[int, int, int]:
        n = b = c = 0
        for k, v in node.items():
            if k == "\0leaves":
                for _, e in v:
                    n += e.tensor.numel
                    b += e.tensor.nbytes
                    c += 1
            else:
                sn, sb, sc = totals(v)
                n, b, c = n + sn, b + sb, c + sc
        return n, b, c

    def label(name: str, path: str, node: dict[str, Any]) -> Text:
        n, b, c = totals(node)
        t = Text(escape(name), style="bold")
        if path in classes:
            t.append(f" ({escape(classes[path].rsplit('.', 1)[-1])})", style="cyan")
        t.append(f"  {c} tensors, {fmt_count(n)} elements, {fmt_bytes(b)}", style="dim")
        return t

    def add(tree: Any, node: dict[str, Any], path: str) -> None:
        for k, v in node.items():
            if k == "\0leaves":
                continue
            sub = f"{path}.{k}" if path else k
            add(tree.add(label(k, sub, v)), v, sub)
        for leaf, e in node.get("\0leaves", []):
            t = e.tensor
            tree.add(Text(f"{escape(leaf)}  {e.kind}  {t.dtype} {fmt_shape(t.shape)}  {fmt_bytes(t.nbytes)}"))

    top = Tree(label(r.checkpoint.container or "(root)", "", root))
    add(top, root, "")
    con.print(top)


def _load_report(con: Any, r: InspectResult) -> None:
    from rich.table import Table
    from rich.text import Text

    lines = r.load_report or []
    blocking = [x for x in lines if x.blocking]
    head = f"load report against {r.model.class_name} ({escape(r.model.spec)}, built on {r.model.built_on}): "
    if not blocking:
        con.print(Text(head + "loads with strict=True", style="bold green"))
    else:
        con.print(Text(head + f"load_state_dict(strict=True) would fail ({len(blocking)} problem(s))", style="bold red"))
    if not lines:
        return
    table = Table(**_TABLE)
    for h in ("key", "problem", "why", "fix"):
        table.add_column(h, overflow="fold")
    for x in lines:
        table.add_row(Text(escape(x.key)), x.problem, Text(escape(x.explanation)), Text(escape(x.fix or "")))
    con.print(table)


def _model_tree(con: Any, r: InspectResult) -> None:
    """The module tree of the model definition: class, parameters and buffers, and which are absent."""
    from rich.text import Text
    from rich.tree import Tree

    in_file = {e.name for e in r.checkpoint.entries if e.group == "" and e.tensor is not None}
    nodes: dict[str, Any] = {}
    top = None
    for m in r.model.modules:
        label = Text(escape(m.path.rsplit(".", 1)[-1] or "(model)"), style="bold")
        label.append(f" ({escape(m.class_name)})", style="cyan")
        parent = nodes.get(m.path.rsplit(".", 1)[0] if "." in m.path else "") if m.path else None
        node = parent.add(label) if parent is not None else (top := Tree(label)) if top is None else top.add(label)
        nodes[m.path] = node
        dot = f"{m.path}." if m.path else ""
        for kind, names in (("parameter", m.parameters), ("buffer", m.buffers)):
            for n in names:
                full = dot + n
                k = "buffer (non-persistent)" if kind == "buffer" and n in m.non_persistent else kind
                slot = r.model.slots.get(full)
                shape = fmt_shape(slot.shape) if slot else ""
                status = "in file" if full in in_file else ("not saved" if k.endswith("(non-persistent)") else "ABSENT from file")
                style = "red" if status.startswith("ABSENT") else None
                node.add(Text(f"{escape(n)}  {k}  {slot.dtype if slot else ''} {shape}  {status}", style=style or ""))
    if top is not None:
        con.print(top)


def module_nodes_dict(nodes: list[ModuleNode]) -> list[dict[str, Any]]:
    return [{"path": m.path, "class": m.class_name, "parameters": list(m.parameters), "buffers": list(m.buffers),
             "non_persistent": list(m.non_persistent)} for m in nodes]


def error_line(message: str) -> None:
    import sys

    sys.stderr.write(f"statecli: error: {escape(message)}\n")



# -- size ----------------------------------------------------------------------------------------

def size_dict(r: SizeResult) -> dict[str, Any]:
    ck = r.checkpoint
    return {
        "path": ck.path, "format": ck.format, "container": ck.container, "files": ck.files,
        "file_bytes": r.file_bytes, "nbytes": r.total.nbytes, "view_nbytes": r.view_nbytes,
        "duplicate_nbytes": r.duplicate_nbytes, "outside_nbytes": r.outside_nbytes,
        "tensors": r.total.tensors, "numel": r.total.numel,
        "parameters": r.parameters, "parameters_human": fmt_count(r.parameters),
        "by_kind": {b.key: _bucket_dict(b) for b in r.by_kind},
        "by_dtype": {b.key: _bucket_dict(b) for b in r.by_dtype},
        "by_device": {b.key: _bucket_dict(b) for b in r.by_device},
        "depth": r.depth,
        "by_module": [{"module": m.module, **_bucket_dict(m.bucket), "share": round(m.share, 6)} for m in r.by_module],
        "top": [entry_dict(e) for e in r.top],
        "warnings": ck.warnings, "notes": ck.notes,
    }


def render_size(r: SizeResult, fmt: str, out: IO[str] | None = None) -> None:
    import sys

    stream = out or sys.stdout
    if fmt == "json":
        write_json(size_dict(r), stream)
        return
    if fmt == "csv":
        w = csv.writer(stream, lineterminator="\n")
        w.writerow(["module", "tensors", "numel", "nbytes", "share"])
        for m in r.by_module:
            w.writerow([escape(m.module), m.bucket.tensors, m.bucket.numel, m.bucket.nbytes, f"{m.share:.6f}"])
        return
    if fmt == "md":
        stream.write(f"# {_md(r.checkpoint.path)}: {fmt_bytes(r.total.nbytes)}, {fmt_count(r.parameters)} params\n\n")
        stream.write("| module | tensors | params/numel | bytes | share |\n|---|---|---|---|---|\n")
        for m in r.by_module:
            stream.write(f"| {_md(m.module)} | {m.bucket.tensors} | {fmt_count(m.bucket.numel)} | "
                         f"{fmt_bytes(m.bucket.nbytes)} | {m.share:.1%} |\n")
        return
    from rich.table import Table
    from rich.text import Text

    con = _console(out)
    ck = r.checkpoint
    con.print(Text(f"{escape(ck.path)}  {ck.format}", style="bold"))
    con.print(Text(f"on disk {fmt_bytes(r.file_bytes)}; tensors {fmt_bytes(r.total.nbytes)} in memory "
                   f"({r.total.tensors} tensors, {fmt_count(r.total.numel)} elements); "
                   f"{fmt_count(r.parameters)} params"))
    if r.duplicate_nbytes:
        con.print(Text(f"shared storage counted once: {fmt_bytes(r.duplicate_nbytes)} would be duplicated if every "
                       f"tensor owned its bytes"))
    if r.outside_nbytes:
        con.print(Text(f"{fmt_bytes(r.outside_nbytes)} of saved storage lies outside every tensor view (a slice of a "
                       "larger tensor saves the whole storage; .clone() before saving to drop it)"))
    table = Table(title=f"by module (depth {r.depth})", title_justify="left", **_TABLE)
    for h in ("module", "tensors", "numel", "size", "share", ""):
        table.add_column(h, justify="left" if h in ("module", "") else "right", overflow="fold")
    for m in r.by_module:
        table.add_row(Text(escape(m.module)), str(m.bucket.tensors), fmt_count(m.bucket.numel), fmt_bytes(m.bucket.nbytes),
                      f"{m.share:.1%}", "█" * max(0, round(m.share * 30)))
    con.print(table)
    for title, buckets in (("by kind", r.by_kind), ("by dtype", r.by_dtype), ("by device", r.by_device)):
        t = Table(title=title, title_justify="left", **_TABLE)
        for h in ("", "tensors", "numel", "size", "share"):
            t.add_column(h, justify="left" if not h else "right")
        for b in buckets:
            share = b.nbytes / r.total.nbytes if r.total.nbytes else 0.0
            t.add_row(Text(escape(b.key)), str(b.tensors), fmt_count(b.numel), fmt_bytes(b.nbytes), f"{share:.1%}")
        con.print(t)
    if r.top:
        t = Table(title=f"largest {len(r.top)} tensors", title_justify="left", **_TABLE)
        for h in ("name", "kind", "dtype", "shape", "size"):
            t.add_column(h, justify="right" if h == "size" else "left", overflow="fold")
        for e in r.top:
            assert e.tensor is not None
            t.add_row(Text(escape(e.name)), e.kind, e.tensor.dtype, fmt_shape(e.tensor.shape), fmt_bytes(e.tensor.nbytes))
        con.print(t)
    print_warnings(ck.warnings, ck.notes, out)


# -- diff ----------------------------------------------------------------------------------------

def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and v != v or isinstance(v, float) and v in (float("inf"), float("-inf")):
        return str(v)
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def diff_key_dict(k: KeyDiff) -> dict[str, Any]:
    d: dict[str, Any] = {"name": k.name, "status": k.status}
    if k.changes:
        d["changes"] = {f: {"a": _jsonable(a), "b": _jsonable(b)} for f, (a, b) in k.changes.items()}
    if k.max_abs is not None:
        d.update(max_abs=_jsonable(k.max_abs), max_rel=_jsonable(k.max_rel), mismatched=k.mismatched, numel=k.numel)
    if k.compared_as:
        d["compared_as"] = k.compared_as
    if k.note:
        d["note"] = k.note
    return d


def diff_dict(r: DiffResult, only_changed: bool = False) -> dict[str, Any]:
    return {
        "a": {"path": r.a.path, "format": r.a.format, "container": r.a.container},
        "b": {"path": r.b.path, "format": r.b.format, "container": r.b.container},
        "equal": r.equal,
        "tolerance": {"rtol": r.rtol, "atol": r.atol, "equal_nan": r.equal_nan, "values_compared": r.values},
        "summary": {str(s): r.count(s) for s in (DiffStatus.REMOVED, DiffStatus.ADDED, DiffStatus.CHANGED, DiffStatus.EQUAL)},
        "hints": r.renames,
        "keys": [diff_key_dict(k) for k in r.keys if not (only_changed and k.status == "equal")],
    }


def _diff_summary_line(r: DiffResult) -> str:
    if r.equal:
        how = f"values allclose (rtol={r.rtol:g}, atol={r.atol:g})" if r.values else "structure only"
        return f"equal: {r.count(DiffStatus.EQUAL)} keys, {how}"
    n = {st: r.count(st) for st in DiffStatus}
    return (f"different: {n[DiffStatus.REMOVED]} removed, {n[DiffStatus.ADDED]} added, {n[DiffStatus.CHANGED]} changed, "
            f"{n[DiffStatus.EQUAL]} equal")


def render_diff(r: DiffResult, fmt: str, only_changed: bool, out: IO[str] | None = None) -> None:
    import sys

    stream = out or sys.stdout
    if fmt == "json":
        write_json(diff_dict(r, only_changed), stream)
        return
    rows = [diff_key_dict(k) for k in r.keys if not (only_changed and k.status == "equal")]
    cols = ["name", "status", "changes", "max_abs", "max_rel", "mismatched", "note"]

    def cells(d: dict[str, Any]) -> list[str]:
        ch = "; ".join(f"{f}: {v['a']} -> {v['b']}" for f, v in d.get("changes", {}).items())
        return [escape(str(x)) for x in (d["name"], d["status"], ch, d.get("max_abs", ""), d.get("max_rel", ""),
                                         d.get("mismatched", ""), d.get("note", ""))]

    if fmt == "csv":
        w = csv.writer(stream, lineterminator="\n")
        w.writerow(cols)
        for d in rows:
            w.writerow(cells(d))
        return
    if fmt == "md":
        stream.write(f"**{_md(_diff_summary_line(r))}**\n\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
        for d in rows:
            stream.write("| " + " | ".join(_md(c) for c in cells(d)) + " |\n")
        return
    from rich.table import Table
    from rich.text import Text

    con = _console(out)
    con.print(Text(f"A {escape(r.a.path)} ({r.a.format})\nB {escape(r.b.path)} ({r.b.format})"))
    for status, title in (("removed", "only in A (removed)"), ("added", "only in B (added)")):
        keys = [k for k in r.keys if k.status == status]
        if keys:
            con.print(Text(f"{title}: {len(keys)}", style="bold"))
            for k in keys[:200]:
                con.print(Text(f"  {'-' if status == 'removed' else '+'} {escape(k.name)}"))
            if len(keys) > 200:
                con.print(f"  ... {len(keys) - 200} more")
    structural = [k for k in r.keys if k.status == "changed" and k.changes]
    if structural:
        t = Table(title=f"changed structure ({len(structural)})", title_justify="left", **_TABLE)
        for h in ("name", "field", "A", "B"):
            t.add_column(h, overflow="fold")
        for k in structural:
            for f, (a, b) in k.changes.items():
                t.add_row(Text(escape(k.name)), f, Text(escape(str(a))), Text(escape(str(b))))
        con.print(t)
    valued = [k for k in r.keys if k.mismatched]
    if valued:
        t = Table(title=f"changed values ({len(valued)}; rtol={r.rtol:g}, atol={r.atol:g}, equal_nan={r.equal_nan})",
                  title_justify="left", **_TABLE)
        for h in ("name", "max abs", "max rel", "over tol", "of", "note"):
            t.add_column(h, justify="right" if h not in ("name", "note") else "left", overflow="fold")
        for k in valued:
            note = "; ".join(x for x in (f"compared as {k.compared_as}" if k.compared_as else "", k.note or "") if x)
            t.add_row(Text(escape(k.name)), _fmt_float(k.max_abs), _fmt_float(k.max_rel), f"{k.mismatched:,}",
                      f"{k.numel:,}" if k.numel is not None else "", Text(escape(note)))
        con.print(t)
    for h in r.renames:
        con.print(Text("hint: " + escape(h), style="cyan"))
    style = "bold green" if r.equal else "bold red"
    con.print(Text(_diff_summary_line(r), style=style))


@contextmanager
def progress_callback(enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr for long comparisons; nothing when stderr is not a terminal."""
    import sys

    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True, console=_console(sys.stderr)) as bar:
        task = bar.add_task("comparing tensors", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# -- rewrites ------------------------------------------------------------------------------------

def render_rewrite(r: RewriteResult, out: IO[str] | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..rewrite.ops import summary_rows

    con = _console(out)
    plan = r.plan
    if r.dry_run:
        con.print(Text(f"dry run: would write {escape(str(r.output))} ({r.out_format}); nothing written", style="bold"))
        for (_, name), dtype in list(plan.cast.items())[:200]:
            con.print(Text(f"  cast {escape(name)} -> {dtype}"))
    removed = [c for c in plan.changes if c.what == "removed"]
    if removed:
        reasons: dict[str, list[Any]] = {}
        for c in removed:
            reasons.setdefault(c.detail, []).append(c)
        for why, cs in reasons.items():
            con.print(Text(f"removed {len(cs)} {escape(why)} entr{'y' if len(cs) == 1 else 'ies'}, "
                           f"{fmt_bytes(sum(c.nbytes for c in cs))}: ", style="bold")
                      + Text(", ".join(escape(c.name) for c in cs[:12]) + (f", ... {len(cs) - 12} more" if len(cs) > 12
                                                                           else "")))
        from ..rewrite.ops import saved_bytes

        freed, listed = saved_bytes(plan), sum(c.nbytes for c in removed)
        con.print(Text(f"saved {fmt_bytes(freed)} of tensor storage", style="bold")
                  + Text(f" ({fmt_bytes(listed - freed)} of the removed tensors share storage with kept ones)"
                         if listed > freed else ""))
    casts = [c for c in plan.changes if c.what == "cast"]
    if casts:
        details = sorted({c.detail for c in casts})
        con.print(Text(f"cast {len(casts)} storage(s): {', '.join(details)}", style="bold"))
        lossy = [c for c in casts if c.overflow or c.underflow]
        if lossy:
            t = Table(title="values lost in the cast", title_justify="left", **_TABLE)
            for h in ("tensor", "overflow -> inf", "underflow -> 0"):
                t.add_column(h, overflow="fold", justify="left" if h == "tensor" else "right")
            for c in lossy:
                t.add_row(Text(escape(c.name)), f"{c.overflow:,}", f"{c.underflow:,}")
            con.print(t)
            con.print(Text(f"warning: {len(lossy)} storage(s) lost values (inf or 0); --strict refuses to write then",
                           style="bold yellow"))
        else:
            con.print(Text("no value overflowed or underflowed the target dtype"))
    for c in plan.changes:
        if c.what == "moved":
            con.print(Text(f"moved {escape(c.name)}: {escape(c.detail)}", style="bold"))
    if not r.dry_run:
        con.print(Text(f"wrote {escape(str(r.output))} ({r.out_format}); verified by re-reading it", style="bold green"))
        t = Table(**_TABLE)
        for h in ("", "before", "after"):
            t.add_column(h, overflow="fold")
        for row in summary_rows(r.before, r.after):
            t.add_row(*row)
        con.print(t)
    for n in plan.notes:
        con.print(Text("note: " + escape(n), style="cyan"))


# -- scan and check ------------------------------------------------------------------------------

def scan_dict(r: ScanResult) -> dict[str, Any]:
    return {"path": r.path, "format": r.format, "verdict": r.verdict, "pickles": r.pickles,
            "globals": [{"name": g.name, "verdict": g.verdict, "where": g.where, "opcode": g.opcode} for g in r.globals],
            "calls": [{"opcode": o, "callee": c, "where": w} for o, c, w in r.calls], "problems": r.problems}


def render_scan(results: list[ScanResult], fmt: str, out: IO[str] | None = None) -> None:
    import sys

    if fmt == "json":
        write_json([scan_dict(r) for r in results], out or sys.stdout)
        return
    from rich.text import Text

    con = _console(out)
    styles = {"safe": "bold green", "needs-trust": "bold yellow", "dangerous": "bold red", "malformed": "bold red"}
    for r in results:
        con.print(Text(f"{escape(r.path)}  {r.format}  ") + Text(r.verdict, style=styles[r.verdict])
                  + Text(f"  ({r.pickles} pickle(s), {len(r.globals)} global reference(s))"))
        seen: dict[str, tuple[str, set[str]]] = {}
        for g in r.globals:
            seen.setdefault(g.name, (g.verdict, set()))[1].add(g.where)
        hidden = 0
        for name, (verdict, wheres) in sorted(seen.items(), key=lambda x: (-_VRANK[x[1][0]], x[0])):
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
        for p in r.problems:
            con.print(Text("  malformed: " + escape(p), style="red"))


_VRANK = {"safe": 0, "needs-trust": 1, "malformed": 2, "dangerous": 3}


def render_check(r: CheckResult, fmt: str, out: IO[str] | None = None) -> None:
    import sys

    if fmt == "json":
        write_json({"passed": r.passed,
                    "findings": [{"path": f.path, "rule": f.rule, "passed": f.passed, "reason": f.reason}
                                 for f in r.findings],
                    "errors": [{"path": p, "error": m} for p, m in r.errors]}, out or sys.stdout)
        return
    from rich.table import Table
    from rich.text import Text

    con = _console(out)
    t = Table(**_TABLE)
    for h in ("file", "rule", "result", "reason"):
        t.add_column(h, overflow="fold")
    for f in r.findings:
        t.add_row(Text(escape(f.path)), f.rule, Text("pass", style="green") if f.passed else Text("FAIL", style="bold red"),
                  Text(escape(f.reason)))
    for p, m in r.errors:
        t.add_row(Text(escape(p)), "read", Text("ERROR", style="bold red"), Text(escape(m)))
    con.print(t)
    failed = sum(1 for f in r.findings if not f.passed)
    con.print(Text(f"{len(r.findings) - failed} passed, {failed} failed" + (f", {len(r.errors)} unreadable" if r.errors
                                                                             else ""),
                   style="bold green" if r.passed else "bold red"))
