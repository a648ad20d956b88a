"""The rewrite commands: cast, strip, move, convert, rename. Each parses options, plans, runs, renders."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..errors import ExitCode, UsageError
from ..state import ModelChoice
from ..vocab import CastOnly, Format
from .app import app, exit_with, output_context
from .options import (
    AddPrefixOpt,
    DataFormat,
    DropUnsupportedOpt,
    DryRunOpt,
    DuplicateTiedOpt,
    FormatOpt,
    InPlaceOpt,
    KeyOpt,
    OutputOpt,
    PathArg,
    QuietOpt,
    ShardOpt,
    StripOpt,
    ToOpt,
    VerboseOpt,
    cast_targets,
    model_options,
)

if TYPE_CHECKING:
    from ..formats import RawCheckpoint
    from ..render import Output
    from ..rewrite.plan import Plan
    from ..rewrite.rename import Renames
    from ..rewrite.spec import Target
    from ..state import Checkpoint

RenameOpt = Annotated[Optional[list[str]], typer.Option(
    "--rename", help="Rename model keys: OLD is a Python regex replaced by NEW everywhere in the key (\\1 "
                     "backrefs); repeatable, applied after --strip-prefix and before --add-prefix.",
    metavar="OLD=NEW")]


def _load(path: str, key: str | None, model: ModelChoice | None = None) -> tuple[Checkpoint, RawCheckpoint, Any]:
    """Checkpoint, raw tree and (with --model, --hf-config or a config.json beside it) the model it is
    classified against."""
    from ..rewrite.plan import open_input

    opened = open_input(path, key, model)
    assert opened.raw is not None  # kept: the rewrite walks it
    return opened.checkpoint, opened.raw, opened.model


def _renames(strip_prefix: list[str] | None, add_prefix: str | None, rename: list[str] | None) -> Renames:
    from ..rewrite.rename import Renames

    return Renames(strip_prefixes=tuple(strip_prefix or ()), renames=tuple(rename or ()), add_prefix=add_prefix)


def _stdout(target: Target) -> Any:
    """The binary stdout for `-o -`; a terminal is refused (binary would garble it)."""
    if target.output != "-" or target.dry_run:
        return None
    if sys.stdout.isatty():
        raise UsageError(None, "-o - writes binary data and stdout is a terminal",
                         "redirect or pipe it, e.g. -o - > out.safetensors")
    return getattr(sys.stdout, "buffer", None)


def _finish(plan: Plan, target: Target, view: Output, renames: Renames | None = None,
            duplicate_tied: bool = False, after: Callable[[], None] | None = None) -> None:
    """Apply the renames, run the plan with a progress bar, and print what changed in the chosen format
    (on stderr when the checkpoint itself goes to stdout)."""
    from ..render import render
    from ..render.rewrite import write_progress
    from ..rewrite.rename import with_renames
    from ..rewrite.run import run

    plan = with_renames(plan, renames)
    if duplicate_tied:
        plan = dataclasses.replace(plan, duplicate_tied=True)
    stdout = _stdout(target)
    with write_progress(view) as progress:
        result = run(plan, target, progress, stdout)
    if after is not None and result.exit_code == ExitCode.OK and not target.dry_run:
        after()  # the files that go beside the weights (a GGUF's config.json)
    if target.output != "-" or target.dry_run:
        render(result, view)
    elif not view.quiet:
        render(result, view, out=sys.stderr)
    exit_with(result.exit_code)


@app.command()
@model_options()
def cast(
    path: PathArg,
    dtype: Annotated[str, typer.Option("--dtype", help="Target floating dtype: half, bfloat16, float32, float64 "
                                                       "(also float8_e4m3fn, float8_e5m2).", metavar="DTYPE",
                                       autocompletion=cast_targets)],
    output: OutputOpt = None,
    only: Annotated[Optional[CastOnly], typer.Option("--only", help="Cast only params or only buffers.",
        metavar="params|buffers")] = None,
    keep: Annotated[Optional[list[str]], typer.Option("--keep", help="Leave tensors matching this regex as they "
                                                                     "are (repeatable).", metavar="REGEX")] = None,
    keep_buffers: Annotated[bool, typer.Option("--keep-buffers", help="Leave every buffer as it is.")] = False,
    include_optimizer: Annotated[bool, typer.Option("--include-optimizer", help="Cast optimizer state too.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse to write when values overflow or underflow.")] = False,
    in_place: InPlaceOpt = False,
    to: ToOpt = None,
    max_shard_size: ShardOpt = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = DataFormat.TABLE,
    key: KeyOpt = None,
    evidence: ModelChoice = ModelChoice(),
    strip_prefix: StripOpt = None,
    add_prefix: AddPrefixOpt = None,
    rename: RenameOpt = None,
    duplicate_tied: DuplicateTiedOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Cast floating-point tensors to another dtype (integers, bools and complex never), with overflow checks.

    Example: statecli cast sample_checkpoints/cnn.pt --dtype half -o cnn-fp16.safetensors
    """
    view = output_context(fmt, quiet, verbose)
    from ..rewrite.plan import plan
    from ..rewrite.spec import CastSpec, Target

    spec = CastSpec(dtype=dtype, only=only, keep=tuple(keep or ()), keep_buffers=keep_buffers,
                    include_optimizer=include_optimizer)
    target = Target(output=output, in_place=in_place, to=to, max_shard_size=max_shard_size, dry_run=dry_run,
                    strict=strict)
    ck, raw, info = _load(path, key, evidence)
    _finish(plan(ck, raw, spec, info), target, view, _renames(strip_prefix, add_prefix, rename),
            duplicate_tied)


@app.command()
@model_options()
def strip(
    path: PathArg,
    output: OutputOpt = None,
    buffers: Annotated[bool, typer.Option("--buffers", help="Remove every buffer.")] = False,
    non_persistent: Annotated[bool, typer.Option("--non-persistent", help="Remove buffers the model says are "
        "non-persistent (needs --model, --hf-config or a config.json beside it).")] = False,
    optimizer: Annotated[bool, typer.Option("--optimizer", help="Remove optimizer and scheduler state.")] = False,
    ema: Annotated[bool, typer.Option("--ema", help="Remove EMA copies of the weights.")] = False,
    keep_ema_as_model: Annotated[bool, typer.Option("--keep-ema-as-model", help="Make the EMA weights the model "
                                                                                "state.")] = False,
    pattern: Annotated[Optional[list[str]], typer.Option("--pattern", help="Remove entries matching this regex "
                                                                           "(repeatable).", metavar="REGEX")] = None,
    keep: Annotated[Optional[list[str]], typer.Option("--keep", help="Never remove entries matching this regex.",
        metavar="REGEX")] = None,
    force: Annotated[bool, typer.Option("--force", help="Remove even what --model says is required.")] = False,
    in_place: InPlaceOpt = False,
    to: ToOpt = None,
    max_shard_size: ShardOpt = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = DataFormat.TABLE,
    drop_unsupported: DropUnsupportedOpt = False,
    key: KeyOpt = None,
    evidence: ModelChoice = ModelChoice(),
    strip_prefix: StripOpt = None,
    add_prefix: AddPrefixOpt = None,
    rename: RenameOpt = None,
    duplicate_tied: DuplicateTiedOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Remove buffers, optimizer state, EMA weights or entries by pattern; prints what went and the bytes saved.

    Example: statecli strip sample_checkpoints/train_ckpt.pt --optimizer -o weights.pt
    """
    view = output_context(fmt, quiet, verbose)
    from ..rewrite.plan import plan
    from ..rewrite.spec import StripSpec, Target

    spec = StripSpec(buffers=buffers, non_persistent=non_persistent, optimizer=optimizer, ema=ema,
                     keep_ema_as_model=keep_ema_as_model, patterns=tuple(pattern or ()), keep=tuple(keep or ()),
                     force=force)
    target = Target(output=output, in_place=in_place, to=to, max_shard_size=max_shard_size, dry_run=dry_run,
                    drop_unsupported=drop_unsupported)
    ck, raw, info = _load(path, key, evidence)
    _finish(plan(ck, raw, spec, info), target, view, _renames(strip_prefix, add_prefix, rename),
            duplicate_tied)


@app.command()
def move(
    path: PathArg,
    device: Annotated[str, typer.Option("--device", help="Device to record for every tensor: cpu or cuda:N.", metavar="DEVICE")],
    output: OutputOpt = None,
    in_place: InPlaceOpt = False,
    to: ToOpt = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = DataFormat.TABLE,
    key: KeyOpt = None,
    strip_prefix: StripOpt = None,
    add_prefix: AddPrefixOpt = None,
    rename: RenameOpt = None,
    duplicate_tied: DuplicateTiedOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rewrite the saved device of every tensor: a checkpoint saved on cuda:0 then loads on a CPU-only machine.

    Example: statecli move sample_checkpoints/cuda.pt --device cpu -o cuda-on-cpu.pt
    """
    view = output_context(fmt, quiet, verbose)
    from ..rewrite.plan import plan
    from ..rewrite.spec import MoveSpec, Target

    ck, raw, _ = _load(path, key)
    target = Target(output=output, in_place=in_place, to=to, dry_run=dry_run)
    _finish(plan(ck, raw, MoveSpec(device=device)), target, view, _renames(strip_prefix, add_prefix, rename),
            duplicate_tied)


@app.command()
def convert(
    path: PathArg,
    output: OutputOpt = None,
    to: ToOpt = None,
    max_shard_size: ShardOpt = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = DataFormat.TABLE,
    drop_unsupported: DropUnsupportedOpt = False,
    key: KeyOpt = None,
    strip_prefix: StripOpt = None,
    add_prefix: AddPrefixOpt = None,
    rename: RenameOpt = None,
    duplicate_tied: DuplicateTiedOpt = False,
    dequantize: Annotated[bool, typer.Option("--dequantize", help="Write quantized weights (GPTQ, AWQ, bitsandbytes, "
        "FP8, MXFP4...) as ordinary tensors of --dtype; a Hugging Face folder's config loses quantization_config.")] = False,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="With --dequantize, or from a GGUF (always written "
        "dequantized): bfloat16, half or float32 (default: each weight's compute dtype; bfloat16 for GGUF).",
        metavar="DTYPE")] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Convert between .pt/.bin, .safetensors, sharded and Hugging Face folders and DCP; ties kept where the format can.

    Example: statecli convert sample_checkpoints/cnn.pt -o cnn.safetensors
    """
    view = output_context(fmt, quiet, verbose)
    from ..rewrite.gguf_hf import gguf_hf_names
    from ..rewrite.plan import plan
    from ..rewrite.spec import ConvertSpec, Target

    target = Target(output=output, to=to, max_shard_size=max_shard_size, dry_run=dry_run,
                    drop_unsupported=drop_unsupported)
    ck, raw, _ = _load(path, key)
    gguf = ck.format is Format.GGUF  # no GGUF writer: its quantized tensors are always written dequantized
    if dtype is not None and not (dequantize or gguf):
        raise UsageError(None, "--dtype needs --dequantize (cast changes the dtype of an unquantized checkpoint)")
    planned = plan(ck, raw, ConvertSpec(dequantize_to=dtype or "bfloat16") if gguf else ConvertSpec())
    planned, target, after = gguf_hf_names(planned, target, dtype) if gguf else (planned, target, None)
    if dequantize:  # GGUF: also into a .pt (a safetensors output already writes its tensors dequantized)
        from ..rewrite.quantized import dequantized

        planned = dequantized(planned, dtype or ("bfloat16" if gguf else None))
    _finish(planned, target, view, _renames(strip_prefix, add_prefix, rename),
            duplicate_tied, after)


@app.command("rename")
def rename_keys(
    path: PathArg,
    output: OutputOpt = None,
    strip_prefix: StripOpt = None,
    add_prefix: AddPrefixOpt = None,
    rename: RenameOpt = None,
    in_place: InPlaceOpt = False,
    to: ToOpt = None,
    max_shard_size: ShardOpt = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = DataFormat.TABLE,
    drop_unsupported: DropUnsupportedOpt = False,
    key: KeyOpt = None,
    duplicate_tied: DuplicateTiedOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rename model keys (strip or add a prefix such as DataParallel's 'module.', or regex renames); values as they are.

    Example: statecli rename dp.pt --strip-prefix module. -o plain.pt
    """
    view = output_context(fmt, quiet, verbose)
    from ..rewrite.plan import plan
    from ..rewrite.spec import ConvertSpec, Target

    renames = _renames(strip_prefix, add_prefix, rename)
    if not renames:
        raise UsageError(None, "rename needs --strip-prefix, --add-prefix or --rename")
    target = Target(output=output, in_place=in_place, to=to, max_shard_size=max_shard_size, dry_run=dry_run,
                    drop_unsupported=drop_unsupported)
    ck, raw, _ = _load(path, key)
    _finish(plan(ck, raw, ConvertSpec()), target, view, renames,
            duplicate_tied)
