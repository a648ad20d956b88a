"""The human view of a rewrite: what was removed, cast (with values lost) or moved, the bytes saved,
where it was written, and a before/after summary."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from ..units import fmt_bytes
from ..vocab import ChangeKind
from .grid import Col, print_grid
from .outcome import rewrite_outcome
from .text import escape, make_console

if TYPE_CHECKING:
    from ..rewrite.plan import Change
    from ..rewrite.result import RewriteResult
    from . import Output

_LISTED = 12  # names listed per removal reason before "... N more"


def human(r: RewriteResult, con: Any, output: Output | None = None) -> None:
    from rich.text import Text

    if r.dry_run:
        con.print(Text(rewrite_outcome(r), style="bold"))
        for (_, name), dtype in list(r.plan.cast.items())[:200]:
            con.print(Text(f"  cast {escape(name)} -> {dtype}"))
    removed = [c for c in r.changes if c.what is ChangeKind.REMOVED]
    if removed:
        _removed(r, removed, con)
    renamed = [c for c in r.changes if c.what is ChangeKind.RENAMED]
    if renamed:
        more = f", ... {len(renamed) - 3} more (-f json lists all)" if len(renamed) > 3 else ""
        con.print(Text(f"renamed {len(renamed)} key(s): ", style="bold")
                  + Text(", ".join(f"{escape(c.name)} -> {escape(c.detail)}" for c in renamed[:3]) + more))
    casts = [c for c in r.changes if c.what is ChangeKind.CAST]
    if casts:
        _casts(casts, con, output is not None and output.verbose)
    dequantized = [c for c in r.changes if c.what is ChangeKind.DEQUANTIZED]
    if dequantized:
        _casts(dequantized, con, output is not None and output.verbose, "dequantized", "weight(s)")
    for c in r.changes:
        if c.what is ChangeKind.MOVED:
            con.print(Text(f"moved {escape(c.name)}: {escape(c.detail)}", style="bold"))
    if r.dry_run and r.planned_bytes is not None:
        before = r.summary_rows()[1][1]
        con.print(Text(f"tensor bytes: {before} -> about {r.planned_bytes:,} B", style="bold"))
    if not r.dry_run:
        con.print(Text(rewrite_outcome(r), style="bold green"))
        print_grid(con, None, [Col(""), Col("before", wrap=True), Col("after", wrap=True)],
                   [[escape(c) for c in row] for row in r.summary_rows()])


@contextmanager
def write_progress(output: Output, err: IO[str] | None = None) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar over bytes written, on stderr, only when stderr is a terminal and not -q.
    Yields the callback to pass into rewrite.run.run (None when there is no bar)."""
    stream = err or sys.stderr
    if output.quiet or not stream.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("writing"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, console=make_console(stream)) as bar:
        task = bar.add_task("writing", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _removed(r: RewriteResult, removed: list[Change], con: Any) -> None:
    from rich.text import Text

    reasons: dict[str, list[Change]] = {}
    for c in removed:
        reasons.setdefault(c.detail, []).append(c)
    for why, cs in reasons.items():
        more = f", ... {len(cs) - _LISTED} more" if len(cs) > _LISTED else ""
        con.print(Text(f"removed {len(cs)} {escape(why)} entr{'y' if len(cs) == 1 else 'ies'}, "
                       f"{fmt_bytes(sum(c.nbytes for c in cs))}: ", style="bold")
                  + Text(", ".join(escape(c.name) for c in cs[:_LISTED]) + more))
    with_kept, among = r.removed_sharing
    shared = []
    if with_kept:
        shared.append(f"{fmt_bytes(with_kept)} of the removed tensors share storage with kept ones, which stays")
    if among:
        shared.append(f"the removed tensors share storage among themselves: {fmt_bytes(among)} counted once")
    con.print(Text(f"saved {fmt_bytes(r.saved_bytes)} of tensor storage", style="bold")
              + Text(f" ({'; '.join(shared)})" if shared else ""))


def _casts(casts: list[Change], con: Any, verbose: bool, verb: str = "cast", unit: str = "storage(s)") -> None:
    """Counts in one line; the tensor table only with -v or when a value overflowed (became inf): an fp16
    cast of real weights routinely flushes a few tiny values to zero, which is no cause for alarm.
    Dequantized weights get the same line with their verb ("dequantized 12 weight(s): GPTQ ... -> bfloat16")."""
    from rich.text import Text

    details = sorted({c.detail for c in casts})
    head = f"{verb} {len(casts)} {unit}: {', '.join(details)}"
    lossy = [c for c in casts if c.overflow or c.underflow]
    if not lossy:
        con.print(Text(head, style="bold") + Text("; no value overflowed or underflowed the target dtype"))
        return
    over = [c for c in lossy if c.overflow]
    under = [c for c in lossy if c.underflow]
    counts = "; ".join(part for part in (
        f"{sum(c.overflow for c in over):,} value(s) overflowed to inf in {len(over)} storage(s)" if over else "",
        f"{sum(c.underflow for c in under):,} tiny value(s) underflowed to 0 in {len(under)} storage(s)"
        if under else "") if part)
    con.print(Text(head, style="bold") + Text(f"; {counts}" + ("" if verbose or over else " (-v lists them)")))
    if not (verbose or over):
        return
    print_grid(con, "values lost in the cast", [Col("tensor", key=True), Col("overflow -> inf", right=True),
               Col("underflow -> 0", right=True)], [[escape(c.name), f"{c.overflow:,}", f"{c.underflow:,}"] for c in lossy])
    if over:
        con.print(Text(f"warning: {len(over)} storage(s) overflowed to inf; --strict refuses to write then",
                       style="bold yellow"))
