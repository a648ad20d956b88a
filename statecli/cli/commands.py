"""The read commands: inspect, size, diff, scan, check. Each parses options, calls the core, renders."""

from __future__ import annotations

import os
from typing import Annotated, Any, Optional

import typer

from ..errors import ExitCode, UsageError
from ..state import OutputFormat
from .app import app
from .options import (
    AddPrefixOpt,
    FormatOpt,
    HfConfigOpt,
    KeyOpt,
    ModelArgOpt,
    ModelKwargsOpt,
    ModelOpt,
    PathArg,
    StripOpt,
)


@app.command()
def inspect(
    path: PathArg,
    tree: Annotated[bool, typer.Option("--tree", help="Show the module hierarchy with per-module totals.")] = False,
    kind: Annotated[Optional[list[str]], typer.Option(
        "--kind", help="Only entries of this kind (repeatable): parameter, buffer, 'buffer (non-persistent)', "
                       "'tensor attribute', 'optimizer state', metadata, unknown.", metavar="KIND")] = None,
    filter_: Annotated[Optional[str], typer.Option("--filter", help="Only entries whose name matches this regex.",
        metavar="REGEX")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Add min/max/mean/std and NaN/Inf counts (reads values).")] = False,
    fmt: FormatOpt = OutputFormat.TABLE,
    key: KeyOpt = None,
    strip_prefix: StripOpt = None,
    add_prefix: AddPrefixOpt = None,
    model: ModelOpt = None,
    model_arg: ModelArgOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    hf_config: HfConfigOpt = None,
    no_hf_config: Annotated[bool, typer.Option("--no-hf-config", help="Ignore a config.json beside the checkpoint "
                                                                      "(it is used when transformers is installed).")] = False,
) -> None:
    """List every entry of a checkpoint with its kind (parameter/buffer), evidence, dtype, shape, size and device.

    Example: statecli inspect sample_checkpoints/cnn.pt
    """
    from ..analyses.inspect import summarize
    from ..load import load_checkpoint
    from ..render import print_warnings, render_inspect

    ck = load_checkpoint(path, key=key, strip_prefix=tuple(strip_prefix or ()), add_prefix=add_prefix)
    info = _model_info(ck, path, model, model_arg, model_kwargs, hf_config, auto_hf=not no_hf_config)
    report = None
    if info is not None:
        from ..modeldef import classify_with_model, load_report

        classify_with_model(ck, info)
        report = load_report(ck, info)
    result = summarize(ck, tuple(kind or ()), filter_)
    result.model = info
    result.load_report = report
    if stats:
        from ..analyses.stats import stats_for

        result.stats = stats_for(ck, result.entries)
    render_inspect(result, fmt.value, tree)
    if fmt != OutputFormat.TABLE:
        print_warnings(ck.warnings, ck.notes)
    if report and (model or hf_config) and any(line.blocking for line in report):
        raise typer.Exit(int(ExitCode.DIFFERENT))


def _model_info(ck: Any, path: str, model: str | None, model_arg: list[str] | None, model_kwargs: str | None,
                hf_config: str | None, auto_hf: bool = False) -> Any:
    """The model definition to classify against: --model, --hf-config, or (with `auto_hf`) a usable
    Hugging Face config.json beside the checkpoint; an unusable one is named in a note and ignored."""
    if model:
        from ..modeldef import build_model, parse_model_args

        return build_model(model, parse_model_args(model_arg or [], model_kwargs))
    if model_arg or model_kwargs:
        raise UsageError(None, "--model-arg/--model-kwargs need --model")
    from ..modeldef import build_hf_model, find_hf_config

    if hf_config:
        return build_hf_model(hf_config)
    cfg = find_hf_config(path) if auto_hf else None
    if cfg is None:
        return None
    import importlib.util
    import json

    try:
        with open(cfg, encoding="utf-8") as f:
            archs = json.load(f).get("architectures")
    except (OSError, ValueError, AttributeError):
        archs = None
    if not archs:
        return None  # some other config.json: not a Hugging Face model description
    if importlib.util.find_spec("transformers") is None:
        ck.notes.append(f"{cfg} describes a Hugging Face model; install transformers (pip install 'statecli[hf]') "
                        "to classify entries exactly against it")
        return None
    try:
        return build_hf_model(cfg)
    except Exception as exc:  # noqa: BLE001 - an auto-detected config must never break inspect
        ck.notes.append(f"ignored {cfg} ({exc}); pass --hf-config to insist")
        return None


@app.command()
def size(
    path: PathArg,
    depth: Annotated[int, typer.Option("--depth", min=1, help="Group modules by this many name components.", metavar="N")] = 1,
    top: Annotated[int, typer.Option("--top", min=0, help="List the N largest tensors.", metavar="N")] = 10,
    fmt: FormatOpt = OutputFormat.TABLE,
    key: KeyOpt = None,
    strip_prefix: StripOpt = None,
) -> None:
    """Break bytes and parameter counts down by module, kind, dtype and device (metadata only).

    Example: statecli size sample_checkpoints/transformer.pt --depth 2
    """
    from ..analyses.size import size_of
    from ..load import load_checkpoint
    from ..render import print_warnings, render_size

    ck = load_checkpoint(path, key=key, strip_prefix=tuple(strip_prefix or ()))
    render_size(size_of(ck, depth, top), fmt.value)
    if fmt != OutputFormat.TABLE:
        print_warnings(ck.warnings, ck.notes)


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="First checkpoint (A).", show_default=False, metavar="A")],
    b: Annotated[str, typer.Argument(help="Second checkpoint (B).", show_default=False, metavar="B")],
    rtol: Annotated[float, typer.Option("--rtol", help="Relative tolerance, as torch.allclose.", metavar="FLOAT")] = 1e-5,
    atol: Annotated[float, typer.Option("--atol", help="Absolute tolerance, as torch.allclose.", metavar="FLOAT")] = 1e-8,
    equal_nan: Annotated[bool, typer.Option("--equal-nan", help="NaN equals NaN (default: NaN differs).")] = False,
    values: Annotated[bool, typer.Option("--values/--no-values", help="Compare values (reads tensors).")] = True,
    only_changed: Annotated[bool, typer.Option("--only-changed", help="Leave equal keys out of the listing.")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Compare every container (optimizer, EMA, epoch...), "
                                                           "not only the model state.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    fmt: FormatOpt = OutputFormat.TABLE,
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
) -> None:
    """Compare two checkpoints: keys, shapes, dtypes, devices, kinds and values; exit 0 equal, 1 different.

    Example: statecli diff sample_checkpoints/cnn.pt sample_checkpoints/cnn.safetensors
    """
    from ..analyses.diff import diff as diff_checkpoints
    from ..load import load_checkpoint
    from ..render import progress_callback, render_diff

    strip = tuple(strip_prefix or ())
    ck_a = load_checkpoint(a, key=key_a or key, strip_prefix=strip, add_prefix=add_prefix_a)
    ck_b = load_checkpoint(b, key=key_b or key, strip_prefix=strip, add_prefix=add_prefix_b)
    with progress_callback(enabled=not quiet) as progress:
        result = diff_checkpoints(ck_a, ck_b, rtol=rtol, atol=atol, equal_nan=equal_nan, values=values,
                                  progress=progress, everything=everything)
    render_diff(result, fmt.value, only_changed)
    if not result.equal:
        raise typer.Exit(int(ExitCode.DIFFERENT))


@app.command()
def scan(
    paths: Annotated[list[str], typer.Argument(help="Checkpoints to scan (a folder: every checkpoint below it).",
                                               show_default=False, metavar="PATH...")],
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """List every global and call each pickle makes, without executing it; exit 0 safe, 1 needs-trust, 3 dangerous/malformed.

    Example: statecli scan sample_checkpoints/full_model.pt
    """
    from ..analyses.scan import DANGEROUS, MALFORMED, NEEDS_TRUST
    from ..analyses.scan import scan as scan_file
    from ..formats import expand_paths
    from ..render import render_scan

    results = [scan_file(p) for p in expand_paths(paths)]
    render_scan(results, fmt.value)
    verdicts = {r.verdict for r in results}
    if verdicts & {DANGEROUS, MALFORMED}:
        raise typer.Exit(int(ExitCode.UNSAFE))
    if NEEDS_TRUST in verdicts:
        raise typer.Exit(int(ExitCode.DIFFERENT))


@app.command()
def check(
    paths: Annotated[list[str], typer.Argument(help="Checkpoints to check (a folder: every checkpoint below it).",
                                               show_default=False, metavar="PATH...")],
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
    model: ModelOpt = None,
    model_arg: ModelArgOpt = None,
    require_format: Annotated[Optional[str], typer.Option("--require-format", help="Allowed formats, e.g. "
                                                                                    "safetensors.", metavar="FORMATS")] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
    junit: Annotated[Optional[str], typer.Option("--junit", help="Also write JUnit XML here.", metavar="FILE")] = None,
    github: Annotated[bool, typer.Option("--github", help="Print GitHub Actions annotations (automatic when "
                                                          "GITHUB_ACTIONS=true).")] = False,
) -> None:
    """Gate checkpoints in CI: pickle safety, NaN/Inf, dtypes, size, devices, keys, optimizer state, model match.

    Example: statecli check sample_checkpoints/*.safetensors --no-nan --devices cpu
    """
    from ..analyses.check import Rules, github_annotations, junit_xml
    from ..analyses.check import check as run_check
    from ..render import render_check

    flags: dict[str, Any] = {}
    for name, value in (("safe-pickle", safe_pickle), ("no-nan", no_nan), ("no-inf", no_inf),
                        ("param-dtypes", param_dtypes), ("buffer-dtypes", buffer_dtypes), ("max-size", max_size),
                        ("devices", devices), ("required-keys", required_keys), ("forbidden-keys", forbidden_keys),
                        ("no-optimizer-state", no_optimizer_state), ("matches-model", model),
                        ("model-args", model_arg), ("format", require_format)):
        if value is not None:
            flags[name] = value
    from ..analyses.check import load_config, rules_from_mapping

    table, source = load_config(config)
    base = rules_from_mapping(Rules(), table, source or "config") if table else Rules()
    base = rules_from_mapping(base, flags, "command line")
    from ..formats import expand_paths

    result = run_check(expand_paths(paths), base, config, overrides_only=True)
    render_check(result, fmt.value)
    if junit:
        from ..formats.atomic import atomic_file

        with atomic_file(junit) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(junit_xml(result))
    if github or os.environ.get("GITHUB_ACTIONS") == "true":
        for line in github_annotations(result):
            typer.echo(line)
    if result.errors:
        raise typer.Exit(int(ExitCode.BAD_INPUT))
    if not result.passed:
        raise typer.Exit(int(ExitCode.DIFFERENT))


