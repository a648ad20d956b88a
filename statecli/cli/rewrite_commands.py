"""The rewrite commands: cast, strip, move, convert. Each parses options, plans, runs, renders."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from .app import app
from .commands import _model_info
from .options import (
    DropUnsupportedOpt,
    DryRunOpt,
    InPlaceOpt,
    KeyOpt,
    ModelArgOpt,
    ModelKwargsOpt,
    ModelOpt,
    OutputOpt,
    PathArg,
    ShardOpt,
    ToOpt,
)


def _load_for_rewrite(path: str, key: str | None, model: str | None, model_arg: list[str] | None,
                      model_kwargs: str | None) -> tuple[Any, Any, Any]:
    """Checkpoint, raw tree and (with --model) the model it is classified against."""
    from ..rewrite.ops import load_for_rewrite

    ck, raw = load_for_rewrite(path, key)
    info = _model_info(ck, path, model, model_arg, model_kwargs, None)
    if info is not None:
        from ..modeldef import classify_with_model

        classify_with_model(ck, info)
    return ck, raw, info


def _rewrite(plan: Any, path: str, output: str | None, in_place: bool, to: str | None, max_shard_size: str | None,
             dry_run: bool, info: Any = None, strict: bool = False, drop_unsupported: bool = False) -> None:
    from ..render import render_rewrite
    from ..rewrite.ops import run

    plan.model = info
    render_rewrite(run(plan, path, output, in_place, to, max_shard_size, dry_run, strict, drop_unsupported))


@app.command()
def cast(
    path: PathArg,
    dtype: Annotated[str, typer.Option("--dtype", help="Target floating dtype: half, bfloat16, float32, float64 "
                                                       "(also float8_e4m3fn, float8_e5m2).", metavar="DTYPE")],
    output: OutputOpt = None,
    only: Annotated[Optional[str], typer.Option("--only", help="Cast only params or only buffers.",
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
    key: KeyOpt = None,
    model: ModelOpt = None,
    model_arg: ModelArgOpt = None,
    model_kwargs: ModelKwargsOpt = None,
) -> None:
    """Cast floating-point tensors to another dtype (integers, bools and complex never), with overflow checks.

    Example: statecli cast sample_checkpoints/cnn.pt --dtype half -o cnn-fp16.safetensors
    """
    from ..rewrite.ops import plan_cast

    ck, raw, info = _load_for_rewrite(path, key, model, model_arg, model_kwargs)
    plan = plan_cast(ck, raw, dtype, only, keep, keep_buffers, include_optimizer)
    _rewrite(plan, path, output, in_place, to, max_shard_size, dry_run, info, strict)


@app.command()
def strip(
    path: PathArg,
    output: OutputOpt = None,
    buffers: Annotated[bool, typer.Option("--buffers", help="Remove every buffer.")] = False,
    non_persistent: Annotated[bool, typer.Option("--non-persistent", help="Remove buffers the model says are "
                                                                          "non-persistent (needs --model).")] = False,
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
    drop_unsupported: DropUnsupportedOpt = False,
    key: KeyOpt = None,
    model: ModelOpt = None,
    model_arg: ModelArgOpt = None,
    model_kwargs: ModelKwargsOpt = None,
) -> None:
    """Remove buffers, optimizer state, EMA weights or entries by pattern; prints what went and the bytes saved.

    Example: statecli strip sample_checkpoints/train_ckpt.pt --optimizer -o weights.pt
    """
    from ..rewrite.ops import plan_strip, required_keys

    ck, raw, info = _load_for_rewrite(path, key, model, model_arg, model_kwargs)
    plan = plan_strip(ck, raw, buffers, non_persistent, optimizer, ema, keep_ema_as_model, pattern, keep,
                      required_keys(info), force)
    _rewrite(plan, path, output, in_place, to, max_shard_size, dry_run, None if force else info,
             drop_unsupported=drop_unsupported)


@app.command()
def move(
    path: PathArg,
    device: Annotated[str, typer.Option("--device", help="Device to record for every tensor: cpu or cuda:N.", metavar="DEVICE")],
    output: OutputOpt = None,
    in_place: InPlaceOpt = False,
    dry_run: DryRunOpt = False,
    key: KeyOpt = None,
) -> None:
    """Rewrite the saved device of every tensor, e.g. make a cuda:0 checkpoint load on a CPU-only machine.

    Example: statecli move sample_checkpoints/cuda.pt --device cpu -o cuda-on-cpu.pt
    """
    from ..rewrite.ops import load_for_rewrite, plan_move

    ck, raw = load_for_rewrite(path, key)
    plan = plan_move(ck, raw, device)
    if ck.format == "safetensors":
        plan.notes.append("safetensors records no device: the output is the same tensors")
    _rewrite(plan, path, output, in_place, None if output is None or output.endswith((".pt", ".pth", ".bin"))
             else None, None, dry_run)


@app.command()
def convert(
    path: PathArg,
    output: OutputOpt = None,
    to: ToOpt = None,
    max_shard_size: ShardOpt = None,
    dry_run: DryRunOpt = False,
    drop_unsupported: DropUnsupportedOpt = False,
    key: KeyOpt = None,
) -> None:
    """Convert between .pt/.bin, .safetensors, sharded folders and DCP; tied tensors written once.

    Example: statecli convert sample_checkpoints/cnn.pt -o cnn.safetensors
    """
    from ..rewrite.ops import Plan, load_for_rewrite

    ck, raw = load_for_rewrite(path, key)
    _rewrite(Plan(ck, raw), path, output, False, to, max_shard_size, dry_run, drop_unsupported=drop_unsupported)


