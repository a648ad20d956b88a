"""The one line that states a command's outcome: all that `-q` prints (with the errors), and the closing
line of each human view, so the quiet line and the full view never disagree."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..io.stdin import shown_path
from ..units import fmt_bytes, fmt_count, fmt_shape, plural
from .text import escape


def outcome(result: Any) -> str:
    """The outcome line of any command's result (names escaped)."""
    from ..analyses.check import CheckResult
    from ..analyses.diff import DiffResult
    from ..analyses.inspect import InspectResult
    from ..analyses.scan import ScanReport
    from ..analyses.show import ShowResult
    from ..analyses.size import SizeResult
    from ..rewrite.result import RewriteResult

    lines: dict[type, Any] = {DiffResult: lambda r: r.summary_line, CheckResult: check_outcome,
                              ScanReport: scan_outcome, RewriteResult: rewrite_outcome, InspectResult: _inspect,
                              SizeResult: _size, ShowResult: _show}
    line = next((lines[t] for t in type(result).__mro__ if t in lines), None)
    if line is None:
        raise TypeError(f"no outcome line for {type(result).__name__}")
    text: str = line(result)
    return text


def check_outcome(r: Any) -> str:
    failed = sum(1 for f in r.findings if not f.passed)
    tail = (f", {len(r.errors)} unreadable" if r.errors else "") + (f", {len(r.unsafe)} UNSAFE" if r.unsafe else "")
    return f"{len(r.findings) - failed} passed, {failed} failed" + tail


def scan_outcome(r: Any) -> str:
    counted = [f for f in r.files if r.counts(f)]
    verdicts = Counter(str(f.verdict) if not (f.error and not (f.globals or f.calls or f.unsafe_content)) else "unreadable"
                       for f in counted)
    parts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    beside = len(r.files) - len(counted)
    return f"scanned {plural(len(counted), 'file')}: {parts or 'nothing'}" + (
        f" ({beside} beside a folder checkpoint, counted with --strict)" if beside else "")


def rewrite_outcome(r: Any) -> str:
    if r.dry_run:
        where = f"would write {escape(str(r.output))} ({r.out_format})" if r.output else f"no -o given ({r.out_format})"
        return f"dry run: {where}; nothing written"
    where = "stdout" if r.output == "-" else escape(str(r.output))
    return f"wrote {where} ({r.out_format}); verified by re-reading it"


def _inspect(r: Any) -> str:
    ck = r.checkpoint
    line = (f"{escape(shown_path(ck))} ({ck.format}): {plural(r.total.tensors, 'tensor')}, {fmt_count(r.total.numel)} "
            f"elements, {fmt_bytes(r.total.nbytes)}")
    if r.model is not None:
        blocking = sum(1 for x in r.load_report if x.blocking)
        line += f"; {r.model.loader} " + (f"would fail ({plural(blocking, 'problem')})" if blocking else "loads strictly")
    return line


def _size(r: Any) -> str:
    return f"{escape(shown_path(r.checkpoint))}: {size_headline(r)[0]}"


def size_headline(r: Any) -> list[str]:
    """`size`'s figures at the top of every view (text, HTML, -q): the model state's first (EMA copies and
    optimizer state are no model parameters), then each other container as what it is, then all tensors.
    Every byte figure is distinct storage, shared storage counted once: the rule of the tables and the tree."""
    m, ck = r.model_state, r.checkpoint
    if m is not None:
        where = f" ({escape(ck.container)})" if ck.container else ""
        first = (f"model state{where}: {fmt_count(r.parameters)} params, {fmt_bytes(m.nbytes)} "
                 f"in {plural(m.tensors, 'tensor')} ({fmt_count(m.numel)} elements)")
    else:
        role = next((c.role for c in ck.containers if c.name == ck.container_name), "other")
        first = f"no model state: the file holds {role} state only"
    lines = [first + f"; on disk {fmt_bytes(r.file_bytes)}"]
    if r.others:
        lines.append("other containers: " + ", ".join(
            f"{escape(c.name)} ({c.role}) {fmt_bytes(c.nbytes)} in {plural(c.tensors, 'tensor')}" for c in r.others))
    if r.others or m is None:
        lines.append(f"all tensors: {fmt_bytes(r.total.nbytes)} in {plural(r.total.tensors, 'tensor')} "
                     f"({fmt_count(r.total.numel)} elements)")
    return lines


def _show(r: Any) -> str:
    t = r.entry.tensor
    what = f"{t.dtype} {fmt_shape(t.shape)}" if t is not None else type(r.entry.value).__name__
    return f"{escape(shown_path(r.checkpoint))}: {escape(r.entry.name)} {what}"
