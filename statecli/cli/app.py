"""The Typer app and the one place where exceptions become exit codes and one-line messages."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import ExitCode, KeptInterrupt, StatecliError, Terminated
from ..extras import quiet_libraries
from . import fastparams  # noqa: F401 - option conversion without pydantic's import (issue 13)

if TYPE_CHECKING:
    from ..render import Output

EXIT_CODES = """Exit codes: 0 success; 1 differences or rule failures; 2 bad usage, unreadable input or an
internal error; 3 unsafe content refused (the file references code that loading would run); 130 Ctrl-C, 143
SIGTERM (nothing written; a batch run keeps its finished records for --resume)."""


def _error_line(message: str) -> None:
    from ..render import error_line

    error_line(message)


_WRITERS = frozenset({"cast", "strip", "move", "convert", "rename"})  # the commands that write a checkpoint


def _interrupted(exc: KeyboardInterrupt, command: str | None) -> str:
    """The line for Ctrl-C/SIGTERM: what a batch kept, "nothing was written" for a rewrite (its writer removed
    its temp files), else just "interrupted" (a read-only command has nothing to write)."""
    if isinstance(exc, KeptInterrupt):
        return f"interrupted; {exc.kept}"
    return "interrupted; nothing was written" if command in _WRITERS else "interrupted"


class StatecliGroup(TyperGroup):
    """Runs every command inside one exception-to-exit-code map: StatecliError -> its one line and
    exit code; anything else is a bug -> one line and exit 2 (STATECLI_DEBUG=1 keeps the traceback)."""

    def invoke(self, ctx: Any) -> Any:
        start = time.perf_counter()
        try:
            result = super().invoke(ctx)
            _timing(ctx, start)
            return result
        except (typer.Exit, SystemExit):
            _timing(ctx, start)
            raise
        except StatecliError as exc:
            if os.environ.get("STATECLI_DEBUG"):
                raise
            _error_line(exc.message)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated): the writers removed their temp files
            _error_line(_interrupted(exc, ctx.invoked_subcommand))
            term = exc.terminated if isinstance(exc, KeptInterrupt) else isinstance(exc, Terminated)
            code = ExitCode.TERMINATED if term else ExitCode.INTERRUPTED
            raise typer.Exit(int(code)) from None
        except BrokenPipeError:  # stdout closed early outside render (`| head`): not an error
            from ..render import stdout_gone

            stdout_gone()
            raise typer.Exit(int(ExitCode.OK)) from None
        except typer.Abort:
            raise
        except Exception as exc:
            if _is_click_exception(exc):
                raise  # a bug: one line and exit 2, never mistaken for "different" (1)
            if os.environ.get("STATECLI_DEBUG"):
                raise
            missing = _missing_extra(exc)
            if missing is not None:  # torch, transformers, ... left out of this install: name the extra
                _error_line(missing.message)
                raise typer.Exit(int(missing.exit_code)) from None
            _error_line(f"internal error: {type(exc).__name__}: {exc} (run with STATECLI_DEBUG=1 for the traceback "
                        "and please report it)")
            raise typer.Exit(int(ExitCode.BAD_INPUT)) from None


def _missing_extra(exc: Exception) -> StatecliError | None:
    if not isinstance(exc, ModuleNotFoundError):
        return None
    from ..extras import missing_extra

    return missing_extra(exc)


_OUTPUT = "statecli.output"  # the command's Output in click's per-invocation ctx.meta (shared by the group)


def output_context(fmt: Any = None, quiet: bool = False, verbose: bool = False) -> Output:
    """The command's -f/-q/-v read once into the Output passed to everything that prints; kept in this
    invocation's context too, for the group's closing -v line (`done in`)."""
    from ..render import Output

    output = Output.of(fmt or "table", quiet, verbose)
    ctx = _current_context()
    if ctx is not None:
        ctx.meta[_OUTPUT] = output
    return output


def _current_context() -> Any:
    try:  # Typer >= 0.20 runs on its own copy of click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - an older Typer on click itself
        from click import get_current_context  # type: ignore[no-redef]
    return get_current_context(silent=True)


def _timing(ctx: Any, start: float) -> None:
    output = ctx.meta.get(_OUTPUT)
    if output is not None:
        from ..io.source import STATS
        from ..render import verbose_line

        net = f"; {STATS.requests} request(s), {STATS.bytes:,} bytes over the network" if STATS.requests else ""
        verbose_line(f"done in {time.perf_counter() - start:.2f} s{net}", output)


def _is_click_exception(exc: Exception) -> bool:
    """Usage errors and exits of the CLI library itself (click's, or the copy Typer vendors)."""
    return any(c.__module__.split(".")[0] in ("click", "typer") for c in type(exc).__mro__[:-3])


def _conventional_arguments() -> None:
    """Usage lines as every other Unix tool writes them (`PATH`, `[PATH]`, `PATH...`), not Typer
    0.29's `{PATH}` and `PATH <str>`. Typer has no setting for it; patched only where the hooks exist."""
    from typer.core import TyperArgument

    if not hasattr(TyperArgument, "_usage_display_name"):
        return

    def usage(self: Any) -> str:
        name = self.display_name_raw
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    TyperArgument._usage_display_name = usage  # type: ignore[method-assign]
    TyperArgument._rich_display_name = usage  # type: ignore[method-assign]
    TyperArgument.display_type_rich = lambda self, ctx: ""  # type: ignore[method-assign,assignment]


_conventional_arguments()

app = typer.Typer(
    name="statecli",
    cls=StatecliGroup,
    help="Inspect PyTorch checkpoints without loading them: parameters vs buffers, dtypes, shapes, "
         "sizes and devices, from .pt, .safetensors, sharded and DCP checkpoints.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"statecli {__version__}")
        raise typer.Exit(int(ExitCode.OK))


@app.callback()
def main_callback(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Show the version and exit.")] = None,
) -> None:
    """statecli: see what is inside a PyTorch checkpoint."""


def exit_with(code: int) -> None:
    """End a command with its result's exit code (0 returns normally)."""
    if code:
        raise typer.Exit(int(code))


def main() -> None:
    """Console-script entry point."""
    import gc

    # One short-lived command: reference counting frees what it drops, and the cyclic collector's passes
    # over 50,000-entry trees cost ~0.1 s of a 1 s inspect while finding next to nothing to free.
    gc.disable()
    _sigterm_raises()
    # the libraries' own lines (torchao's "Failed to load ...so", torch's deprecations, transformers' advice), which
    # they print on imports made lazily anywhere below (transformers imports a model's modules on attribute access)
    _only_the_invoked_command(sys.argv[1:2])
    with quiet_libraries():  # and torch's C++ log level, set before anything imports torch
        app()


def _only_the_invoked_command(first: list[str]) -> None:
    """Keep only the command named on the command line: Typer reads every registered command's signature into
    click parameters on each run (~30 ms for all of them). With no command named, or one that does not exist,
    all stay, so `statecli --help` lists them and a typo gets click's suggestions."""
    chosen = [c for c in app.registered_commands
              if first and first[0] == (c.name or (c.callback.__name__.replace("_", "-") if c.callback else None))]
    if chosen:
        app.registered_commands = chosen


def _sigterm_raises() -> None:
    """SIGTERM unwinds like Ctrl-C (cleanups run, one line, exit 143) instead of killing the process
    mid-write with Python's default action."""
    import signal

    def terminated(signum: int, frame: Any) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, terminated)
