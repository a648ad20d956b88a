"""`statecli show`: one tensor in full (statistics, histogram, first and extreme values, module path)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..io.stdin import local_input, named
from ..state import ModelChoice, OutputFormat
from .app import app, exit_with, output_context
from .options import (
    KeyOpt,
    QuietOpt,
    ReadPathArg,
    ReportFormatOpt,
    StripOpt,
    VerboseOpt,
    model_options,
)


@app.command()
@model_options()
def show(
    path: ReadPathArg,
    name: Annotated[str, typer.Argument(help="The entry to show, e.g. 'layers.0.attn.q_proj.weight'.",
                                        show_default=False, metavar="KEY")],
    bins: Annotated[int, typer.Option("--bins", min=1, max=1000, help="Histogram bins.", metavar="N")] = 40,
    first: Annotated[int, typer.Option("--first", min=0, help="How many leading values to print.", metavar="N")] = 10,
    extremes: Annotated[int, typer.Option("--extremes", min=0, help="How many smallest and largest values.",
                                          metavar="N")] = 5,
    fmt: ReportFormatOpt = OutputFormat.TABLE,
    key: KeyOpt = None,
    strip_prefix: StripOpt = None,
    evidence: ModelChoice = ModelChoice(),
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show one tensor: statistics, a full histogram, its first and extreme values and its module path.

    Example: statecli show sample_checkpoints/cnn.pt conv2.weight
    """
    view = output_context(fmt, quiet, verbose)
    from ..analyses.show import show as show_entry
    from ..open import open_checkpoint
    from ..render import render

    # The same evidence inspect uses (a config.json beside the file, --model, --hf-config): one kind per entry.
    with local_input(path) as local:
        ck = named(open_checkpoint(local, key, evidence, strip_prefix=tuple(strip_prefix or ())).checkpoint, path)
        result = show_entry(ck, name, bins=bins, first=first, extreme=extremes)
        render(result, view)
    exit_with(result.exit_code)
