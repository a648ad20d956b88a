"""The read commands: inspect, size, diff, scan, check. Each parses options, calls the core, renders."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..errors import UsageError
from ..io.stdin import STDIN, STDIN_NAME, local_input, named
from ..state import KindFilter, ModelChoice, OutputFormat
from ..vocab import BatchCommand, SortOrder
from .app import app, exit_with, output_context
from .ci_options import BaselineOpt, CiFormat, CiFormatOpt
from .ndjson_options import BatchArgs, MoreArg, batch_options, record_options
from .options import (
    AddPrefixOpt,
    KeyOpt,
    QuietOpt,
    ReadPathArg,
    ReportFormatOpt,
    StripOpt,
    VerboseOpt,
    model_options,
)

if TYPE_CHECKING:
    from ..analyses.check import CheckResult
    from ..render import Output
    from ..state import Checkpoint


@app.command()
@batch_options
@model_options()
def inspect(
    path: ReadPathArg,
    more: MoreArg = None,
    tree: Annotated[bool, typer.Option("--tree", help="Show the module hierarchy with per-module totals.")] = False,
    kind: Annotated[Optional[list[KindFilter]], typer.Option(
        "--kind", help="Only entries of this kind (repeatable): parameter, buffer (every buffer), "
                       "'buffer (non-persistent)', 'tensor attribute', 'optimizer state', metadata, unknown.",
        metavar="KIND")] = None,
    filter_: Annotated[Optional[str], typer.Option("--filter", help="Only entries whose name matches this regex.",
        metavar="REGEX")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Add min/max/mean/std and NaN/Inf counts (reads values).")] = False,
    storage: Annotated[bool, typer.Option("--storage", help="List each quantized weight's stored parts (qweight, "
                                                            "scales, zeros...) under it; JSON always has them.")] = False,
    metadata: Annotated[bool, typer.Option("--metadata", help="GGUF: list every metadata key (arrays summarised; "
                                                              "--format json has them whole).")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="With --stats: percentiles and histograms from every value, "
                                                        "not a random sample (slower; implies --stats).")] = False,
    fmt: ReportFormatOpt = OutputFormat.TABLE,
    key: KeyOpt = None,
    strip_prefix: StripOpt = None,
    add_prefix: AddPrefixOpt = None,
    evidence: ModelChoice = ModelChoice(),
    many: BatchArgs = BatchArgs(None),
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List every entry of a checkpoint with its kind (parameter/buffer), evidence, dtype, shape, size and device.

    Example: statecli inspect sample_checkpoints/cnn.pt
    """
    if many.records(BatchCommand.INSPECT, [path], more, record_options(BatchCommand.INSPECT, stats=stats or exact),
                    quiet, verbose):
        return
    view = output_context(fmt, quiet, verbose)
    from ..analyses.inspect import inspect as inspect_checkpoint
    from ..open import open_checkpoint
    from ..render import render

    with local_input(path) as local:  # `-`: stdin, spooled (values may be read until render ends)
        opened = open_checkpoint(local, key, evidence, strip_prefix=tuple(strip_prefix or ()), add_prefix=add_prefix,
                                 classify_by_model=False)  # inspect classifies and reports against the model itself
        result = inspect_checkpoint(named(opened.checkpoint, path), tuple(kind or ()), filter_, stats=stats or exact, exact=exact,
                                    model=opened.model, model_explicit=evidence.explicit, tree=tree,
                                    storage=storage, all_metadata=metadata)
        render(result, view)
    exit_with(result.exit_code)


@app.command()
@batch_options
@model_options()
def size(
    path: ReadPathArg,
    more: MoreArg = None,
    depth: Annotated[int, typer.Option("--depth", min=1, help="Group modules by this many name components.", metavar="N")] = 1,
    top: Annotated[int, typer.Option("--top", min=0, help="List the N largest tensors.", metavar="N")] = 10,
    memory: Annotated[bool, typer.Option("--memory", help="Memory of the loaded weights (as stored and dequantized) "
                                                          "and, with --context, the KV cache.")] = False,
    context: Annotated[Optional[int], typer.Option("--context", min=1, help="With --memory: tokens of KV cache, "
        "from the config.json beside the checkpoint (standard and grouped-query attention).", metavar="N")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="With --context: sequences in the batch.",
                                       metavar="B")] = 1,
    kv_dtype: Annotated[Optional[str], typer.Option("--kv-dtype", help="With --context: the cache's dtype "
        "(default: the config's).", metavar="DTYPE")] = None,
    fmt: ReportFormatOpt = OutputFormat.TABLE,
    key: KeyOpt = None,
    strip_prefix: StripOpt = None,
    evidence: ModelChoice = ModelChoice(),
    many: BatchArgs = BatchArgs(None),
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Break bytes and parameter counts down by module, kind, dtype and device (metadata only).

    Example: statecli size sample_checkpoints/transformer.pt --depth 2
    """
    if many.records(BatchCommand.SIZE, [path], more, record_options(BatchCommand.SIZE, depth=depth), quiet, verbose):
        return
    view = output_context(fmt, quiet, verbose)
    from ..analyses.size import size_of
    from ..open import open_checkpoint
    from ..render import render

    with local_input(path) as local:
        ck = named(open_checkpoint(local, key, evidence, strip_prefix=tuple(strip_prefix or ())).checkpoint, path)
        render(size_of(ck, depth, top, memory=memory, context=context, batch=batch, kv_dtype=kv_dtype), view)


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="First checkpoint (A; - for stdin).", show_default=False, metavar="A")],
    b: Annotated[str, typer.Argument(help="Second checkpoint (B; - for stdin).", show_default=False, metavar="B")],
    rtol: Annotated[float, typer.Option("--rtol", min=0.0, help="Relative tolerance (torch.allclose).", metavar="FLOAT")] = 1e-5,
    atol: Annotated[float, typer.Option("--atol", min=0.0, help="Absolute tolerance (torch.allclose).", metavar="FLOAT")] = 1e-8,
    equal_nan: Annotated[bool, typer.Option("--equal-nan", help="NaN equals NaN (default: NaN differs).")] = False,
    values: Annotated[bool, typer.Option("--values/--no-values", help="Compare values (reads tensors).")] = True,
    only_changed: Annotated[bool, typer.Option("--only-changed", help="Leave equal keys out of the listing.")] = False,
    ignore_dtype: Annotated[bool, typer.Option("--ignore-dtype", help="A dtype change alone is no difference: compare "
                                                                      "values in the common dtype, within tolerance.")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Compare every container (optimizer, EMA, epoch...), "
                                                           "not only the model state.")] = False,
    by_module: Annotated[bool, typer.Option("--by-module", help="Show the values compared by module: ||b-a||/||a||, "
                                                                "cosine, max |d|, share over tolerance (CSV: one row per "
                                                                "module).")] = False,
    depth: Annotated[int, typer.Option("--depth", min=0, help="Modules are this many name components (0: down to "
                                                              "each numbered block, e.g. layers.3).", metavar="N")] = 0,
    sort: Annotated[SortOrder, typer.Option("--sort", help="Order of the modules: order (as in the model), change, "
                                                           "cosine, max-abs, over-tol, name.", metavar="BY")] = SortOrder.ORDER,
    quiet: QuietOpt = False,
    fmt: ReportFormatOpt = OutputFormat.TABLE,
    key: KeyOpt = None,
    strip_prefix: StripOpt = None,
    add_prefix_a: Annotated[Optional[str], typer.Option("--add-prefix-a", help="Prepend this to A's model keys.",
        metavar="PREFIX")] = None,
    add_prefix_b: Annotated[Optional[str], typer.Option("--add-prefix-b", help="Prepend this to B's model keys.",
        metavar="PREFIX")] = None,
    key_a: Annotated[Optional[str], typer.Option("--key-a", help="Container of A's model state (default: --key).",
        metavar="KEY")] = None,
    key_b: Annotated[Optional[str], typer.Option("--key-b", help="Container of B's model state (default: --key).",
        metavar="KEY")] = None,
    strict_sharing: Annotated[bool, typer.Option("--strict-sharing", help="Storage sharing that differs (a tie or "
                                                 "view on one side, separate tensors on the other) makes the files "
                                                 "different (default: a note).")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Compare two checkpoints: keys, shapes, dtypes, devices, kinds and values; exit 0 equal, 1 different.

    Example: statecli diff sample_checkpoints/cnn.pt sample_checkpoints/cnn.safetensors
    """
    view = output_context(fmt, quiet, verbose)
    from ..load import load_checkpoint

    strip = tuple(strip_prefix or ())
    if a == b == STDIN:
        raise UsageError(None, "only one of A and B can be '-' (stdin)")
    with local_input(a) as local_a, local_input(b) as local_b:
        ck_a = named(load_checkpoint(local_a, key=key_a or key, strip_prefix=strip, add_prefix=add_prefix_a), a)
        ck_b = named(load_checkpoint(local_b, key=key_b or key, strip_prefix=strip, add_prefix=add_prefix_b), b)
        _diff(ck_a, ck_b, view, dict(rtol=rtol, atol=atol, equal_nan=equal_nan, values=values, everything=everything,
                                     only_changed=only_changed, ignore_dtype=ignore_dtype, depth=depth,
                                     by_module=by_module, sort=sort, strict_sharing=strict_sharing))


def _diff(ck_a: Checkpoint, ck_b: Checkpoint, view: Output, options: dict[str, Any]) -> None:
    from ..analyses.diff import diff as diff_checkpoints
    from ..render import progress_callback, render

    with progress_callback(view) as progress:
        result = diff_checkpoints(ck_a, ck_b, progress=progress, **options)
    render(result, view)
    exit_with(result.exit_code)


@app.command()
@batch_options
def scan(
    paths: Annotated[Optional[list[str]], typer.Argument(
        help="Checkpoints to scan (a folder: every checkpoint below it); none with --from-list.",
        show_default=False, metavar="PATH")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Files beside a folder checkpoint that its loader does not "
                                                          "read (optimizer.pt, training_args.bin, *.pkl...) count in "
                                                          "the exit code too (default: listed only).")] = False,
    fmt: CiFormatOpt = CiFormat.TABLE,
    baseline: BaselineOpt = None,
    many: BatchArgs = BatchArgs(None),
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List every global and call each pickle makes, without running it; exit 0 safe, 1 needs-trust, 2 unreadable, 3 unsafe.

    Example: statecli scan sample_checkpoints/full_model.pt
    """
    paths = paths or []
    if many.records(BatchCommand.SCAN, paths, None, record_options(BatchCommand.SCAN, strict=strict), quiet, verbose):
        return
    view = output_context(fmt, quiet, verbose)
    from ..analyses.baseline import with_baseline
    from ..analyses.scan import scan_paths
    from ..render import render

    with local_input(STDIN if STDIN in paths else "") as spooled:  # `-`: stdin, as inspect and diff read it
        report = scan_paths([spooled if p == STDIN else p for p in paths], strict=strict)
    if STDIN in paths:
        from dataclasses import replace

        report = replace(report, files=tuple(replace(f, path=STDIN_NAME) if f.path == spooled else f
                                             for f in report.files))
    report = with_baseline(report, baseline)
    render(report, view)
    exit_with(report.exit_code)


@app.command()
@batch_options
@model_options(kwargs=False)
def check(
    paths: Annotated[Optional[list[str]], typer.Argument(
        help="Checkpoints to check (a folder: every checkpoint below it); none with --from-list.",
        show_default=False, metavar="PATH")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="TOML file with the rules (default: "
                                                                   "[tool.statecli.check] in pyproject.toml).",
                                                                       metavar="FILE")] = None,
    safe_pickle: Annotated[Optional[bool], typer.Option("--safe-pickle/--no-safe-pickle",
                                                        help="Only weights-only allowlisted globals (default on).")] = None,
    no_nan: Annotated[Optional[bool], typer.Option("--no-nan", help="No NaN in floating tensors (reads values).")] = None,
    no_inf: Annotated[Optional[bool], typer.Option("--no-inf", help="No Inf in floating tensors (reads values).")] = None,
    param_dtypes: Annotated[Optional[str], typer.Option("--param-dtypes", help="Allowed parameter dtypes, "
                                                                               "comma-separated.", metavar="DTYPES")] = None,
    buffer_dtypes: Annotated[Optional[str], typer.Option("--buffer-dtypes", help="Allowed buffer dtypes.",
        metavar="DTYPES")] = None,
    storage_dtypes: Annotated[Optional[str], typer.Option("--storage-dtypes", help="Allowed dtypes as stored "
        "(a quantized weight's packed parts, scales, zeros).", metavar="DTYPES")] = None,
    max_size: Annotated[Optional[str], typer.Option("--max-size", help="Size budget on disk, e.g. 2GB.", metavar="SIZE")] = None,
    devices: Annotated[Optional[str], typer.Option("--devices", help="Allowed saved devices, e.g. cpu.",
        metavar="DEVICES")] = None,
    required_keys: Annotated[Optional[list[str]], typer.Option("--required-key", "--required-keys",
                                                               help="Regex some key must match (repeatable).",
                                                               metavar="REGEX")] = None,
    forbidden_keys: Annotated[Optional[list[str]], typer.Option("--forbidden-key", "--forbidden-keys",
                                                                help="Regex no key may match (repeatable).",
                                                                metavar="REGEX")] = None,
    no_optimizer_state: Annotated[Optional[bool], typer.Option("--no-optimizer-state", help="No optimizer state.")] = None,
    evidence: ModelChoice = ModelChoice(),
    require_format: Annotated[Optional[str], typer.Option("--require-format", help="Allowed formats, e.g. "
                                                                                    "safetensors.", metavar="FORMATS")] = None,
    bits_per_weight_max: Annotated[Optional[str], typer.Option("--bits-per-weight-max", help="Stored bits per "
        "parameter (scales and zeros included) at most this, e.g. 4.5.", metavar="BITS")] = None,
    quantization: Annotated[Optional[str], typer.Option("--quantization", help="Quantized with one of these methods "
        "(gptq, awq, compressed-tensors, bitsandbytes, fp8, mxfp4), every linear weight but the ignore list.",
        metavar="METHODS")] = None,
    fmt: CiFormatOpt = CiFormat.TABLE,
    baseline: BaselineOpt = None,
    junit: Annotated[Optional[str], typer.Option("--junit", help="Also write JUnit XML here.", metavar="FILE")] = None,
    github: Annotated[bool, typer.Option("--github", help="Print GitHub Actions annotations (automatic when "
                                                          "GITHUB_ACTIONS=true).")] = False,
    summary: Annotated[Optional[str], typer.Option("--summary", help="Also append the Markdown table (-f md) to "
                                                   "this file, e.g. $GITHUB_STEP_SUMMARY.", metavar="FILE")] = None,
    many: BatchArgs = BatchArgs(None),
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Gate checkpoints in CI: pickle safety, NaN/Inf, dtypes, size, devices, keys, optimizer state, model match.

    Example: statecli check sample_checkpoints/*.safetensors --no-nan --devices cpu
    """
    flags = {name: value for name, value in (
        ("safe-pickle", safe_pickle), ("no-nan", no_nan), ("no-inf", no_inf), ("param-dtypes", param_dtypes),
        ("buffer-dtypes", buffer_dtypes), ("max-size", max_size), ("devices", devices), ("required-keys", required_keys),
        ("forbidden-keys", forbidden_keys), ("no-optimizer-state", no_optimizer_state),
        ("matches-model", evidence.model), ("model-args", list(evidence.model_args) or None),
        ("format", require_format), ("bits-per-weight-max", bits_per_weight_max),
        ("quantization", quantization), ("storage-dtypes", storage_dtypes)) if value is not None}
    if many.records(BatchCommand.CHECK, paths or [], None, record_options(BatchCommand.CHECK, rules=flags, config=config),
                    quiet, verbose):
        return
    view = output_context(fmt, quiet, verbose)
    from ..analyses.baseline import with_baseline
    from ..render import render
    from ..render.ci import write_ci_outputs

    result = with_baseline(_check_paths(paths or [], flags, config, evidence), baseline)  # --model: a rule
    render(result, view)
    write_ci_outputs(result, junit, summary, github or os.environ.get("GITHUB_ACTIONS") == "true")
    exit_with(result.exit_code)


def _check_paths(paths: list[str], flags: dict[str, Any], config: str | None, evidence: ModelChoice) -> CheckResult:
    """`check` of these paths, `-` read from stdin and named <stdin> (its rules: --config or the command line)."""
    from ..analyses.check import check as run_check

    with local_input(STDIN if STDIN in paths else "") as spooled:
        result = run_check([spooled if p == STDIN else p for p in paths], flags, config, evidence.config_only())
    return result.named(spooled, STDIN_NAME) if STDIN in paths else result
