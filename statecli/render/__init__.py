"""Rendering: one `render(result, fmt)` for every result — rich views for people, JSON/CSV/Markdown
from the result's own `to_dict()`/`rows()` for machines. The only layer that prints."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import IO, Any

from ..errors import UsageError
from ..io.stdin import shown_path
from ..notes import Note, note_texts, warning_texts
from ..state import Checkpoint, OutputFormat
from .text import escape, make_console

# Human views by result type: (module holding the result class, the class, module of render/, function). A
# result's class is found among the modules already imported (a result's own module always is), so drawing an
# `inspect` table imports neither rich's other views nor the diff/check/size/rewrite result modules.
_HUMAN = (("analyses.inspect", "InspectResult", "human_inspect", "render_inspect"),
          ("analyses.size", "SizeResult", "human", "render_size"), ("analyses.diff", "DiffResult", "human", "render_diff"),
          ("analyses.check", "CheckResult", "human", "render_check"), ("analyses.scan", "ScanReport", "human", "render_scan"),
          ("rewrite.result", "RewriteResult", "rewrite", "human"), ("analyses.show", "ShowResult", "human_show", "render_show"))
_HUMAN_TAKES_OUTPUT = frozenset({"rewrite.result"})  # views called as view(result, console, output)


def _human_view(result: Any) -> tuple[Callable[..., None], bool]:
    """The human view of `result` and whether it takes the Output (a view whose detail depends on -v)."""
    import sys

    package = __name__.rsplit(".", 1)[0]
    for t in type(result).__mro__:
        for home, cls, module, func in _HUMAN:
            loaded = sys.modules.get(f"{package}.{home}")
            if loaded is not None and getattr(loaded, cls) is t:
                human: Callable[..., None] = getattr(import_module(f".{module}", __name__), func)
                return human, home in _HUMAN_TAKES_OUTPUT
    raise TypeError(f"no human view for {type(result).__name__}")


@dataclass(frozen=True)
class Output:
    """How a command prints, read once from its -f/-q/-v options and passed to whatever prints:
    -q the one line that states the outcome (render/outcome.py; a machine format asked for with -f is
    still written whole: it is the result) and errors, nothing else; -v also what was read and how long
    it took (stderr)."""

    fmt: OutputFormat = OutputFormat.TABLE
    quiet: bool = False
    verbose: bool = False

    @classmethod
    def of(cls, fmt: OutputFormat | str = OutputFormat.TABLE, quiet: bool = False, verbose: bool = False) -> Output:
        return cls(OutputFormat(fmt), quiet and not verbose, verbose)


def render(result: Any, output: Output | OutputFormat | str = Output(), out: IO[str] | None = None) -> None:
    """Print `result` in the output's format; then every message it carries (its checkpoints'
    warnings and notes, its own notes) on stderr, whatever the format, so stdout holds the result
    only. A result that cannot give a format (no rows for CSV, say) refuses it with a UsageError."""
    output = output if isinstance(output, Output) else Output.of(output)
    stream = out or sys.stdout
    try:
        if output.quiet and output.fmt is OutputFormat.TABLE:
            from .outcome import outcome

            stream.write(outcome(result) + "\n")
        else:
            _render(result, output, stream, out)
        stream.flush()
    except BrokenPipeError:  # `| head`: the reader has all it wanted; the command's own exit code stands
        stdout_gone()
    print_notes(messages(result), output)
    for ck in _checkpoints(result):
        verbose_line(f"read {shown_path(ck)} ({ck.format}, {len(ck.files)} file(s), {len(ck.entries)} entries)", output)
        _skipped_checks(ck, output)


def _skipped_checks(ck: Checkpoint, output: Output) -> None:
    """-v: what a remote metadata read left unchecked (SECURITY.md, "Remote files")."""
    if not output.verbose:
        return
    from ..io.zipheaders import skipped

    for f in ck.files:
        for check in skipped(f):
            verbose_line(f"{f}: remote metadata read; not checked yet: {check}", output)


def _checkpoints(result: Any) -> list[Checkpoint]:
    plan = getattr(result, "plan", None)  # a rewrite: the checkpoint it read
    found = [getattr(result, name, None) for name in ("checkpoint", "a", "b")] + [getattr(plan, "ck", None)]
    return [ck for ck in found if isinstance(ck, Checkpoint)]


def messages(result: Any) -> list[Note]:
    """Every message `result` carries, each once: its checkpoints' (warnings and notes of reading,
    classifying and the model definition), then the result's own notes (a diff's, a rewrite's)."""
    found: list[Note] = [n for ck in _checkpoints(result) for n in ck.messages]
    found += getattr(result, "notes", ())  # typed records, made where the step made them
    return list(dict.fromkeys(found))


def stdout_gone() -> None:
    """stdout's reader went away: point the descriptor at /dev/null so no later flush (ours or the
    interpreter's at exit) raises again or prints 'Exception ignored ... BrokenPipeError'."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real descriptor (a test runner's buffer): nothing to redirect
        pass


def _render(result: Any, output: Output, stream: IO[str], out: IO[str] | None) -> None:
    fmt = output.fmt
    if fmt is OutputFormat.JSON:
        from .machine import write_json

        write_json(result.to_dict(), stream)
    elif fmt in (OutputFormat.CSV, OutputFormat.MD):
        if not hasattr(result, "rows"):
            raise UsageError(None, f"--format {fmt} is not available here", "use --format json or table")
        from .machine import columns_of, write_csv, write_md

        if fmt is OutputFormat.CSV:
            rows = result.rows()
            write_csv(columns_of(result, rows), rows, stream)
        else:
            write_md(result, stream)
    elif fmt is OutputFormat.HTML:
        from .html import write_html

        write_html(result, stream)
    elif fmt is OutputFormat.SARIF:
        from .sarif import write_sarif

        write_sarif(result, stream)
    elif fmt is OutputFormat.JUNIT:
        from .ci import write_junit_xml

        write_junit_xml(result, stream)
    else:
        view, takes_output = _human_view(result)
        if takes_output:  # a view whose detail depends on -v
            view(result, make_console(out), output)
        else:
            view(result, make_console(out))


def verbose_line(text: str, output: Output) -> None:
    """A -v line on stderr; on a terminal folded at words like the notes (a path or name stays whole)."""
    if not output.verbose:
        return
    line = f"statecli: {escape(text)}"
    if sys.stderr.isatty():
        import shutil
        import textwrap

        width = shutil.get_terminal_size().columns
        line = "\n".join(textwrap.wrap(line, width, subsequent_indent="  ", break_long_words=False,
                                        break_on_hyphens=False)) if len(line) > width else line
    sys.stderr.write(line + "\n")


def print_notes(notes: list[Note], output: Output, out: IO[str] | None = None) -> None:
    """Warnings first, then notes, on stderr (or `out`); nothing with -q."""
    if output.quiet or not notes:
        return  # and rich is never imported on the JSON path
    from rich.text import Text

    con = make_console(out, err=out is None)
    for w in warning_texts(notes):
        con.print(Text("warning: ", style="bold yellow") + Text(escape(w)))
    for n in note_texts(notes):
        con.print(Text("note: ", style="bold cyan") + Text(escape(n)))


def error_line(message: str) -> None:
    """The one error line; URLs in it lose their credentials (a message may quote a raw argument)."""
    from ..io.source import redact

    sys.stderr.write(f"statecli: error: {escape(redact(message))}\n")


@contextmanager
def progress_callback(output: Output) -> Iterator[Any]:
    """A rich progress bar on stderr for long comparisons; nothing with -q or when stderr is not a terminal."""
    if output.quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True, console=make_console(sys.stderr)) as bar:
        task = bar.add_task("comparing tensors", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


__all__ = ["Output", "render", "messages", "print_notes", "error_line", "progress_callback", "escape", "verbose_line"]
