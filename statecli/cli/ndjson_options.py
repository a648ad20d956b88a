"""The batch options every many-checkpoint command shares (scan, inspect, check, size, batch): with `--ndjson OUT`
the command writes one JSON record per checkpoint through statecli/batch; without it, its usual output."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

from ..vocab import BatchCommand
from .app import exit_with, output_context

__all__ = ["BatchArgs", "CacheDirOpt", "ExecutorOpt", "FailFastOpt", "FromListOpt", "JobsOpt", "MaxRateOpt", "MoreArg",
           "NdjsonOpt", "NoCacheOpt", "ResumeOpt", "ShardOpt", "batch_options", "record_options", "run_records"]

_NEEDS = "only with --ndjson"
NdjsonOpt = Annotated[Optional[str], typer.Option("--ndjson", help="Many checkpoints: append one JSON record per "
                                                  "checkpoint here as it finishes (statecli report aggregates them).",
                                                  metavar="OUT")]
FromListOpt = Annotated[Optional[str], typer.Option("--from-list", help=f"Also read inputs from this file, one a line "
                                                    f"('-': standard input); {_NEEDS}.", metavar="FILE")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Checkpoints at once (threads for metadata, "
                                      f"processes for value work); {_NEEDS}.", metavar="N")]
ExecutorOpt = Annotated[str, typer.Option("--executor", help="local, dask:local (a local Dask cluster of --jobs worker "
                                          f"processes) or dask://HOST:PORT (the dask extra); {_NEEDS}.",
                                          metavar="WHERE")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Skip inputs whose record OUT already holds (a half-written "
                                         "last line is redone).")]
CacheDirOpt = Annotated[Optional[str], typer.Option("--cache-dir", help="Result cache of --ndjson runs (default: the "
                                                    "user cache dir, statecli/batch).", metavar="DIR")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the result cache.")]
FailFastOpt = Annotated[bool, typer.Option("--fail-fast/--keep-going", help="With --ndjson: stop at the first "
                                           "checkpoint that does not pass (default: keep going).")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help=f"Only shard i of N (1-based), e.g. 2/4, for a CI "
                                                 f"matrix; {_NEEDS}.", metavar="i/N")]
MaxRateOpt = Annotated[Optional[float], typer.Option("--max-requests-per-second", min=0.0, help="Limit remote requests "
                                                     f"(per process); {_NEEDS}.", metavar="RATE")]
MoreArg = Annotated[Optional[list[str]], typer.Argument(help="More checkpoints, folders or globs (with --ndjson).",
                                                        show_default=False, metavar="[MORE]...")]


@dataclass(frozen=True)
class BatchArgs:
    """The batch options as given: read once, passed whole to `run_records`."""

    ndjson: str | None
    from_list: str | None = None
    jobs: int = 1
    executor: str = "local"
    resume: bool = False
    cache_dir: str | None = None
    no_cache: bool = False
    fail_fast: bool = False
    shard: str | None = None
    max_rate: float | None = None

    def records(self, command: BatchCommand, inputs: list[str], more: list[str] | None, options: dict[str, Any],
                quiet: bool, verbose: bool) -> bool:
        """With --ndjson: the records of every input, and True (the command is done); otherwise False, the
        command's own output follows."""
        if not self.ndjson:
            self.refuse_many(str(command), more)
            if not inputs:
                from ..errors import UsageError

                raise UsageError(None, f"{command} needs a checkpoint", "name one (a folder: every checkpoint below "
                                                                         "it), or a list: --from-list FILE --ndjson OUT")
            return False
        run_records(command, [*inputs, *(more or ())], options, self, quiet, verbose)
        return True

    def refuse_many(self, command: str, more: list[str] | None) -> None:
        """Without --ndjson a command keeps its one table: more inputs for inspect/size (which read one
        checkpoint) or a batch option are a usage error, never silently ignored."""
        from ..errors import UsageError

        if more:
            raise UsageError(None, f"{command} reads one checkpoint", "for many, add --ndjson OUT (one record each)")
        given = [name for name, value, default in (
            ("--from-list", self.from_list, None), ("--jobs", self.jobs, 1), ("--executor", self.executor, "local"),
            ("--resume", self.resume, False), ("--cache-dir", self.cache_dir, None), ("--no-cache", self.no_cache, False),
            ("--fail-fast", self.fail_fast, False), ("--shard", self.shard, None),
            ("--max-requests-per-second", self.max_rate, None)) if value != default]
        if given:
            raise UsageError(None, f"{given[0]} needs --ndjson OUT", "it shapes a run with one record per checkpoint")


_PARAMS: tuple[tuple[str, Any, Any], ...] = (
    ("ndjson", NdjsonOpt, None), ("from_list", FromListOpt, None), ("jobs", JobsOpt, 1),
    ("executor", ExecutorOpt, "local"), ("resume", ResumeOpt, False), ("cache_dir", CacheDirOpt, None),
    ("no_cache", NoCacheOpt, False), ("fail_fast", FailFastOpt, False), ("shard", ShardOpt, None),
    ("max_rate", MaxRateOpt, None))


def batch_options(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command the batch options, declared here once: Typer sees them as the command's own options;
    the command receives them as one `many: BatchArgs` keyword."""
    import functools
    import inspect

    sig = inspect.signature(func, eval_str=True)  # Typer reads a set __signature__ as it is
    kept = [p for p in sig.parameters.values() if p.name != "many"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
             for name, ann, default in _PARAMS]

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> None:
        many = BatchArgs(**{name: kwargs.pop(name) for name, _, _ in _PARAMS})
        func(*args, many=many, **kwargs)

    command.__signature__ = sig.replace(parameters=kept + added)  # type: ignore[attr-defined]
    command.__annotations__ = ({k: v for k, v in func.__annotations__.items() if k != "many"}
                               | {name: ann for name, ann, _ in _PARAMS})
    return command


def record_options(command: BatchCommand, *, strict: bool = False, rules: dict[str, Any] | None = None,
                   config: str | None = None, stats: bool = False, depth: int = 1) -> dict[str, Any]:
    """The options that shape a record (part of its task id and cache key), the same whichever command spelling
    (`statecli scan --ndjson` or `statecli batch scan`) ran it."""
    if command is BatchCommand.SCAN:
        return {"strict": strict}
    if command is BatchCommand.CHECK:
        return {"rules": rules or {}, "config": config}
    return {"stats": stats} if command is BatchCommand.INSPECT else {"depth": depth}


def run_records(command: BatchCommand, names: list[str], options: dict[str, Any], args: BatchArgs, quiet: bool,
                verbose: bool) -> None:
    """Expand the inputs, run `command` over them with one NDJSON record each, exit with the worst code."""
    view = output_context("json", quiet, verbose)
    from ..batch.inputs import expand_inputs, parse_shard, read_list, shard_of
    from ..batch.runner import BatchOptions, default_cache_dir, run_batch
    from ..errors import UsageError

    assert args.ndjson
    names = names + (read_list(args.from_list) if args.from_list else [])
    if not names:
        raise UsageError(None, "no inputs", "name checkpoints, folders or globs, or --from-list FILE")
    chosen = shard_of(expand_inputs(names), parse_shard(args.shard) if args.shard else None)
    opts = BatchOptions(args.ndjson, args.jobs, args.executor, args.resume,
                        None if args.no_cache else args.cache_dir or default_cache_dir(), args.fail_fast, args.max_rate)
    summary = run_batch(command, chosen, options, opts, progress=None if view.quiet else _progress(view.verbose))
    if not view.quiet:
        sys.stderr.write(f"statecli: {summary.written} record(s) written to {args.ndjson}, {summary.resumed} already "
                         f"there, {summary.cached} from the cache, {summary.errors} error(s)"
                         + ("; stopped at the first failure" if summary.stopped else "") + "\n")
    exit_with(summary.exit_code)


def _progress(verbose: bool) -> Any:
    tty = sys.stderr.isatty()

    def show(done: int, total: int, rec: dict[str, Any]) -> None:
        from ..render import escape

        line = f"[{done}/{total}] {rec.get('input')}: " + str(rec.get("error") or rec.get("verdict") or
                                                              f"exit {rec.get('exit_code')}")
        if verbose:
            sys.stderr.write(f"statecli: {escape(line)}\n")
        elif tty:
            sys.stderr.write(f"\r\x1b[2K{escape(line)[:200]}" + ("\n" if done == total else ""))
        sys.stderr.flush()

    return show
