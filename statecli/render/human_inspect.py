"""The human view of `inspect`: tables by container, a module tree, the summary and the load report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..io.stdin import shown_path
from ..state import Container, Entry, Role, Stats, gc_paused
from ..units import fmt_bytes, fmt_count, fmt_shape, plural
from ..vocab import Layout
from .grid import KIND_STYLES, Col, print_grid
from .text import FINITE_HEADS, escape, finite_cells, finite_note, first_word, fmt_float, sample_note, short_evidence

if TYPE_CHECKING:
    from ..analyses.inspect import InspectResult
    from ..analyses.quantized import QuantSummary
    from ..qtensor import BitsRow

_NUMERIC = {"numel", "size", "min", "max", "mean", "std", "nan", "inf", "|x| p50", "|x| p99", "zeros"}
_MIN = {"name": 14, "kind": 9, "evidence": 8, "shape": 8}
_WRAP = {"kind", "evidence"}  # text that may fold; a shape is never split across lines
_SHORT = {"evidence": short_evidence, "dtype": first_word}  # what a narrow table shortens, and how
# Droppable columns, the first to go highest: what --stats adds goes after numel, down to min/max/mean and the
# NaN/Inf counts (never dropped); `inspect --format json` and `show` have every figure.
_DROP = {"numel": 20, "histogram": 19, "finite std": 18, "finite mean": 17, "|x| p50": 16, "|x| p99": 15,
         "zeros": 14, "std": 13, "finite min": 12, "finite max": 11}


def render_inspect(r: InspectResult, con: Any) -> None:
    _header(con, r)
    if r.gguf is not None:
        from .human_gguf import render_gguf_header

        render_gguf_header(r.gguf, con)
    with gc_paused():  # a row of cells per tensor: see state.gc_paused
        if r.tree and r.model is not None:
            _model_tree(con, r)
        elif r.tree:
            _tree(con, r)
        else:
            _tables(con, r)
    _summary(con, r)
    if r.quant is not None:
        quant_tables(con, r.quant)
    if r.gguf is not None:
        from .human_gguf import render_gguf_totals

        render_gguf_totals(r.gguf, con)
    if r.model is not None:
        _load_report(con, r)


def _header(con: Any, r: InspectResult) -> None:
    from rich.text import Text

    ck = r.checkpoint
    t = Text()
    t.append(escape(shown_path(ck)), style="bold")
    t.append(f"  {ck.format}")
    if ck.format.files_phrase(len(ck.files)):
        t.append(f", {ck.format.files_phrase(len(ck.files))}")
    root_role = next((c.role for c in ck.containers if c.name == ck.container_name), Role.MODEL)
    if root_role == Role.MODEL:
        t.append(f"  model state: {escape(ck.container_name)}")
    else:  # a bare optimizer.state_dict() (accelerate's optimizer.bin) or similar: no model state at all
        t.append(f"  no model state: the file holds {root_role} state only")
    con.print(t)
    others = [c for c in ck.containers if c.role != Role.MODEL and c.name != ck.container_name]
    if others:
        con.print(Text("other containers: " + ", ".join(f"{escape(c.name)} ({_counts(c)})" for c in others)))


def _counts(c: Container) -> str:
    """A container's role and what it holds, leaving out a count of none ("ema, 10 tensors")."""
    held = [plural(n, word) for n, word in ((c.tensors, "tensor"), (c.entries - c.tensors, "value")) if n]
    return ", ".join([str(c.role), *held])


def _tables(con: Any, r: InspectResult) -> None:
    groups: dict[str, list[Entry]] = {}
    for e in r.entries:
        groups.setdefault(e.group, []).append(e)
    for g, es in groups.items():
        tensors = [e for e in es if e.tensor is not None]
        values = [e for e in es if e.tensor is None]
        root_role = next((c.role for c in r.checkpoint.containers if c.name == r.checkpoint.container_name),
                         Role.MODEL)
        title = ("model state" if root_role == Role.MODEL else f"{root_role} state") if g == "" else g
        if tensors:
            _tensor_table(con, title, tensors, r.stats, r.storage)
        if values:
            _value_table(con, f"{title}: values", values)


def _tensor_table(con: Any, title: str, entries: list[Entry], stats: Mapping[str, Stats], storage: bool = False) -> None:

    heads = ["name", "kind", "evidence", "dtype", "shape", "numel", "size", "device"]
    rows = []
    for e in entries:
        t = e.tensor
        assert t is not None
        # A quantized weight's dtype cell says so (its scheme): the device cell stays the device, so a
        # uniform device can move into the title at a narrow width.
        dev = t.device + (f" ({t.layout})" if t.layout != Layout.STRIDED and t.quant is None else "")
        row = [escape(e.name), e.kind, str(e.evidence), t.dtype, fmt_shape(t.shape), f"{t.numel:,}", fmt_bytes(t.nbytes), dev]
        if t.quant is not None:
            row[3] = f"{t.dtype} ({t.quant.scheme})"
        rows.append(row)
        if storage and t.quant is not None:  # the stored parts, indented under their logical weight
            for (role, name), part in zip(t.quant.parts, t.quant.tensors):
                rows.append([escape(f"  └ {name}"), f"({role})", "stored part", part.dtype, fmt_shape(part.shape),
                             f"{part.numel:,}", fmt_bytes(part.nbytes), part.device])
    print_grid(con, f"{escape(title)} ({plural(len(entries), 'tensor')})", _cols(heads), rows, {1: KIND_STYLES})
    if stats:
        _stats_table(con, title, entries, stats)


def _cols(heads: list[str]) -> list[Col]:
    # At narrow widths (grid.fit): a uniform device goes into the title, evidence keeps its first word
    # ("inferred", "model") and a quantized dtype its logical dtype ("nf4": the quantization table under
    # the summary names the scheme), numel goes, then the figures in _DROP's order; names and shapes stay whole.
    return [Col(h, right=h in _NUMERIC or h in FINITE_HEADS, wrap=h in _WRAP, min_width=_MIN.get(h, 12),
                key=h == "name", uniform=h == "device", short=_SHORT.get(h), drop=_DROP.get(h, 0))
            for h in heads]


def _stats_table(con: Any, title: str, entries: list[Entry], stats: Mapping[str, Stats]) -> None:
    """--stats: the figures of each tensor in a table of their own under the listing, so both fit a terminal
    (at a narrow one the figures in _DROP go first; min/max/mean and the NaN/Inf counts stay)."""
    read = [s for s in (stats.get(e.name) for e in entries) if s is not None and s.note is None]
    finite = any(s.has_non_finite for s in read)
    heads = ["name", "min", "max", "mean", "std", "|x| p50", "|x| p99", "zeros", "nan", "inf", "histogram"]
    heads += FINITE_HEADS if finite else []
    rows = [[escape(e.name), *_stat_cells(s), *(finite_cells(s) if finite else [])]
            for e, s in ((e, stats.get(e.name)) for e in entries)]
    print_grid(con, f"{escape(title)}: statistics", _cols(heads), rows)
    for note in (sample_note(read), finite_note(read)):
        if note:
            con.print(note)


def quant_tables(con: Any, q: QuantSummary) -> None:
    """Bits per weight by scheme and by module pattern, then over the quantized weights and the model."""
    cols = [Col("", wrap=True), Col("tensors", right=True), Col("numel", right=True), Col("stored", right=True),
            Col("bits/weight", right=True)]
    label = ", ".join(q.methods) + (" (inferred)" if q.inferred else "")
    rows = [_bits_cells(r) for r in (*q.by_scheme, q.quantized, q.model)]
    print_grid(con, f"quantization: {escape(label)}", cols, [[escape(c) for c in r] for r in rows])
    by_module = [Col("", key=True), *cols[1:]]  # module patterns are names: never folded
    print_grid(con, "bits per weight by module", by_module, [[escape(c) for c in _bits_cells(r)] for r in q.by_module])


def _bits_cells(r: BitsRow) -> list[str]:
    bpw = r.bits_per_weight
    return [r.key, str(r.tensors), fmt_count(r.numel), fmt_bytes(r.nbytes), "-" if bpw is None else f"{bpw:.3f}"]


def _stat_cells(s: Stats | None) -> list[str]:
    """min, max, mean, std, |x| p50, |x| p99, zero share, NaN and Inf counts, histogram over [min, max]."""
    from .charts import spark

    if s is None or s.note is not None:
        return [(s.note if s else None) or "-"] + [""] * 9
    zeros = s.frac(s.zeros)
    mark = "" if s.exact else "*"
    return [fmt_float(s.min), fmt_float(s.max), fmt_float(s.mean), fmt_float(s.std), fmt_float(s.p50_abs) + mark,
            fmt_float(s.p99_abs) + mark, "-" if zeros is None else f"{zeros:.1%}", str(s.nan), str(s.inf),
            spark(s.hist) + mark]


def _value_table(con: Any, title: str, entries: list[Entry]) -> None:
    rows = []
    for e in entries:
        value = json.dumps(e.value, default=str) if not isinstance(e.value, str) else e.value
        if len(value) > 160:
            value = value[:157] + "..."
        rows.append([escape(e.name), escape(e.value_type or ""), escape(value)])
    print_grid(con, escape(title), [Col("name", key=True), Col("type"), Col("value", wrap=True, min_width=20)], rows)


def _summary(con: Any, r: InspectResult) -> None:
    from rich.text import Text

    rows = []
    for label, buckets in (("kind", r.by_kind), ("dtype", r.by_dtype), ("device", r.by_device)):
        for i, b in enumerate(buckets):
            rows.append([label if i == 0 else "", escape(b.key), str(b.tensors), fmt_count(b.numel), fmt_bytes(b.nbytes)])
    rows.append(["total", "", str(r.total.tensors), fmt_count(r.total.numel), fmt_bytes(r.total.nbytes)])
    cols = [Col("by"), Col(""), Col("tensors", right=True), Col("numel", right=True), Col("size", right=True)]
    print_grid(con, "summary (shared storage counted once)", cols, rows, {1: KIND_STYLES})
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
    from .tree_text import print_tree

    print_tree(con, r.module_tree())


def _load_report(con: Any, r: InspectResult) -> None:
    from rich.text import Text

    lines = r.load_report
    blocking = [x for x in lines if x.blocking]
    head = f"load report against {r.model.class_name} ({escape(r.model.spec)}, built on {r.model.built_on}): "
    if not blocking:
        how = "loads with strict=True" if r.model.loader.startswith("load_state_dict") else f"loads with {r.model.loader}"
        con.print(Text(head + how, style="bold green"))
    else:
        con.print(Text(head + f"{r.model.loader} would fail ({plural(len(blocking), 'problem')})", style="bold red"))
    # The problem table holds exactly the counted problems; what the loader accepts is listed apart.
    accepted = [x for x in lines if not x.blocking]
    for group, title in ((blocking, None), (accepted, f"accepted by {r.model.loader}:")):
        if not group:
            continue
        if title:
            con.print(Text(title))
        rows = [[escape(x.key), x.problem, escape(x.explanation), escape(x.fix or "")] for x in group]
        print_grid(con, None, [Col("key", key=True), Col("problem"), Col("why", wrap=True, min_width=20),
                               Col("fix", wrap=True)], rows)


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
