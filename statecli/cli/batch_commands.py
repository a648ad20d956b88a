"""`statecli batch COMMAND INPUT... --ndjson OUT` (scan, inspect, check or size over many checkpoints, one
JSON record each) and `statecli report OUT.ndjson` (those records aggregated)."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any, Optional

import typer

from ..state import OutputFormat
from ..vocab import BatchCommand as Command
from .app import app, exit_with, output_context
from .options import QuietOpt, VerboseOpt


@app.command()
def batch(
    command: Annotated[Command, typer.Argument(help="scan, inspect, check or size.", show_default=False,
                                               metavar="COMMAND")],
    inputs: Annotated[Optional[list[str]], typer.Argument(
        help="Checkpoints: paths, folders (walked), globs ('models/**/*.pt', 's3://bucket/**/*.safetensors'; quote "
             "them).", show_default=False, metavar="INPUT")] = None,
    ndjson: Annotated[str, typer.Option("--ndjson", help="Append one JSON record per checkpoint here as it finishes.",
                                        metavar="OUT")] = "",
    from_list: Annotated[Optional[str], typer.Option("--from-list", help="Also read inputs from this file, one a "
                                                     "line ('-': standard input).", metavar="FILE")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Checkpoints at once (threads for metadata, "
                                      "processes for value work).", metavar="N")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local, dask:local (a local Dask cluster of --jobs "
                                          "worker processes) or dask://HOST:PORT (needs the dask extra).",
                                          metavar="WHERE")] = "local",
    resume: Annotated[bool, typer.Option("--resume", help="Skip inputs whose record OUT already holds (a half-"
                                         "written last line is redone).")] = False,
    cache_dir: Annotated[Optional[str], typer.Option("--cache-dir", help="Result cache (default: the user cache "
                                                     "dir, statecli/batch).", metavar="DIR")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the result cache.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast/--keep-going", help="Stop at the first checkpoint that "
                                            "does not pass (default: keep going).")] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Only shard i of N (1-based), e.g. 2/4, for a CI "
                                                 "matrix.", metavar="i/N")] = None,
    max_rate: Annotated[Optional[float], typer.Option("--max-requests-per-second", min=0.0, help="Limit remote "
                                                      "requests (per process).", metavar="RATE")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="scan: files beside a folder checkpoint count too.")] = False,
    rules: Annotated[Optional[str], typer.Option("--rules", help="check: rules as JSON with the option names, e.g. "
                                                 "'{\"no-nan\": true, \"devices\": \"cpu\"}'.", metavar="JSON")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="check: TOML file with the rules.",
                                                  metavar="FILE")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="inspect: also min/max/mean/std, NaN/Inf (reads values).")] = False,
    depth: Annotated[int, typer.Option("--depth", min=1, help="size: module depth.", metavar="N")] = 1,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run scan, inspect, check or size over many checkpoints with one NDJSON record each; exit with the worst code.

    Example: statecli batch scan 'models/**/*.pt' --ndjson scan.ndjson --jobs 8
    """
    view = output_context("json", quiet, verbose)
    from ..batch.inputs import expand_inputs, parse_shard, read_list, shard_of
    from ..batch.runner import BatchOptions, default_cache_dir, run_batch
    from ..errors import UsageError

    if not ndjson:
        raise UsageError(None, "batch needs --ndjson OUT", "e.g. --ndjson records.ndjson")
    names = list(inputs or ()) + (read_list(from_list) if from_list else [])
    if not names:
        raise UsageError(None, "no inputs", "name checkpoints, folders or globs, or --from-list FILE")
    chosen = shard_of(expand_inputs(names), parse_shard(shard) if shard else None)
    options = _options(command, strict, rules, config, stats, depth)
    opts = BatchOptions(ndjson, jobs, executor, resume, None if no_cache else cache_dir or default_cache_dir(),
                        fail_fast, max_rate)
    summary = run_batch(command, chosen, options, opts, progress=None if view.quiet else _progress(view.verbose))
    if not view.quiet:
        sys.stderr.write(f"statecli: {summary.written} record(s) written to {ndjson}, {summary.resumed} already there, "
                         f"{summary.cached} from the cache, {summary.errors} error(s)"
                         + ("; stopped at the first failure" if summary.stopped else "") + "\n")
    exit_with(summary.exit_code)


def _options(command: Command, strict: bool, rules: str | None, config: str | None, stats: bool,
             depth: int) -> dict[str, Any]:
    """The options that shape a record (they are part of its task id and cache key)."""
    import json

    from ..errors import UsageError

    if command is Command.SCAN:
        return {"strict": strict}
    if command is Command.CHECK:
        try:
            table = json.loads(rules) if rules else {}
        except ValueError as exc:
            raise UsageError(None, f"--rules is not JSON: {exc}") from None
        if not isinstance(table, dict):
            raise UsageError(None, "--rules must be a JSON object")
        return {"rules": table, "config": config}
    return {"stats": stats} if command is Command.INSPECT else {"depth": depth}


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


class ReportFormat(StrEnum):
    MD = OutputFormat.MD.value
    HTML = OutputFormat.HTML.value
    JSON = OutputFormat.JSON.value
    JUNIT = OutputFormat.JUNIT.value
    SARIF = OutputFormat.SARIF.value


@app.command()
def report(
    records: Annotated[list[str], typer.Argument(help="NDJSON files written by `statecli batch --ndjson` (a sharded "
                                                 "run's outputs together).", show_default=False, metavar="FILE")],
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="md, html, json, junit or sarif.")] = ReportFormat.MD,
    quiet: QuietOpt = False,
) -> None:
    """Aggregate batch records: counts per outcome and format, top findings, slowest and largest files, errors.

    Example: statecli report scan.ndjson --format sarif > statecli.sarif
    """
    view = output_context("json", quiet)
    from ..batch.report import load_report
    from ..render import Output, render

    result = load_report(records)
    render(result, Output.of(fmt.value, view.quiet, view.verbose))
    exit_with(result.exit_code)
