"""`statecli batch COMMAND INPUT... --ndjson OUT` (scan, inspect, check or size over many checkpoints, one
JSON record each) and `statecli report OUT.ndjson` (those records aggregated)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Optional

import typer

from ..state import OutputFormat
from ..vocab import BatchCommand as Command
from .app import app, exit_with, output_context
from .ndjson_options import BatchArgs, batch_options, record_options, run_records
from .options import QuietOpt, VerboseOpt


@app.command()
@batch_options
def batch(
    command: Annotated[Command, typer.Argument(help="scan, inspect, check or size.", show_default=False,
                                               metavar="COMMAND")],
    inputs: Annotated[Optional[list[str]], typer.Argument(
        help="Checkpoints: paths, folders (walked), globs ('models/**/*.pt', 's3://bucket/**/*.safetensors'; quote "
             "them).", show_default=False, metavar="INPUT")] = None,
    many: BatchArgs = BatchArgs(None),
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
    """Alias of `statecli scan|inspect|check|size INPUT... --ndjson OUT`: one NDJSON record per checkpoint.

    Example: statecli batch scan 'models/**/*.pt' --ndjson scan.ndjson --jobs 8
    """
    from ..errors import UsageError

    if not many.ndjson:
        raise UsageError(None, "batch needs --ndjson OUT", "e.g. --ndjson records.ndjson")
    run_records(command, list(inputs or ()), _options(command, strict, rules, config, stats, depth), many, quiet,
                verbose)


def _options(command: Command, strict: bool, rules: str | None, config: str | None, stats: bool,
             depth: int) -> dict[str, Any]:
    """The options that shape a record (they are part of its task id and cache key)."""
    import json

    from ..errors import UsageError

    if command is Command.SCAN:
        return record_options(command, strict=strict)
    if command is Command.CHECK:
        try:
            table = json.loads(rules) if rules else {}
        except ValueError as exc:
            raise UsageError(None, f"--rules is not JSON: {exc}") from None
        if not isinstance(table, dict):
            raise UsageError(None, "--rules must be a JSON object")
        return record_options(command, rules=table, config=config)
    return record_options(command, stats=stats, depth=depth)


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
