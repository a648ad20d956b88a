"""Options declared once, as Annotated aliases every command reuses."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Optional

import typer

from ..state import ModelChoice, OutputFormat
from ..vocab import CastTarget, WriteFormat

_PATH_HELP = "A .pt/.pth/.bin/.safetensors file, a *.index.json, or a folder (sharded, DCP or single checkpoint)"
PathArg = Annotated[str, typer.Argument(help=_PATH_HELP + ".", show_default=False, metavar="PATH")]
ReadPathArg = Annotated[str, typer.Argument(help=_PATH_HELP + "; - reads one file from stdin.", show_default=False,
                                            metavar="PATH")]
class DataFormat(StrEnum):
    """The OutputFormats every command gives (html only where a report exists: ReportFormatOpt)."""

    TABLE = OutputFormat.TABLE.value
    JSON = OutputFormat.JSON.value
    CSV = OutputFormat.CSV.value
    MD = OutputFormat.MD.value


FormatOpt = Annotated[DataFormat, typer.Option("--format", "-f", help="Output format.")]
ReportFormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format (html: one "
                                                                               "self-contained page, no network).")]
KeyOpt = Annotated[Optional[str], typer.Option("--key", help="Container that holds the model state, e.g. "
                                                           "'model_ema' or 'state_dict' ('.' for the file's root).",
                                                               metavar="KEY")]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="Model definition 'pkg.module:Name' or 'path/file.py:Name' (a class or factory). IMPORTING IT RUNS "
                    "THAT CODE: pass only code you trust. Built on the meta device: no weights are allocated.",
    metavar="SPEC")]
ModelArgOpt = Annotated[Optional[list[str]], typer.Option("--model-arg", help="key=value passed to the model "
                                                                            "(Python literal, else string); repeatable.",
                                                                                metavar="KEY=VALUE")]
ModelKwargsOpt = Annotated[Optional[str], typer.Option("--model-kwargs", help="JSON object of keyword arguments.",
    metavar="JSON")]
HfConfigOpt = Annotated[Optional[str], typer.Option("--hf-config", help="A Hugging Face config.json to build the "
                                                                      "model from (needs transformers).", metavar="PATH")]
NoHfConfigOpt = Annotated[bool, typer.Option("--no-hf-config", help="Ignore a config.json beside the checkpoint "
                                                                   "(it is used when transformers is installed).")]
AddPrefixOpt = Annotated[Optional[str], typer.Option("--add-prefix", help="Prepend this to every model key.", metavar="PREFIX")]
StripOpt = Annotated[Optional[list[str]], typer.Option("--strip-prefix", help="Remove this prefix from model keys "
                                                                             "(repeatable), e.g. 'module.'.", metavar="PREFIX")]


OutputOpt = Annotated[Optional[str], typer.Option("--output", "-o", help="Where to write (.pt, .safetensors, a "
                                                                      "folder with --max-shard-size / --to dcp, or - "
                                                                      "for stdout: the input's format unless --to).",
                                                                          metavar="PATH")]
InPlaceOpt = Annotated[bool, typer.Option("--in-place", help="Replace the input (atomically).")]
ToOpt = Annotated[Optional[WriteFormat], typer.Option("--to", help="Output format: pt, safetensors or dcp (default: from "
                                                           "the output's extension).", metavar="FORMAT")]
ShardOpt = Annotated[Optional[str], typer.Option("--max-shard-size", help="Write Hugging Face shards of at most this "
                                                                          "size (e.g. 5GB) plus an index.", metavar="SIZE")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")]
DropUnsupportedOpt = Annotated[bool, typer.Option("--drop-unsupported", help="Leave out sparse/quantized/meta "
                                                                             "tensors instead of refusing.")]
DuplicateTiedOpt = Annotated[bool, typer.Option("--duplicate-tied", help="safetensors output: store every tied "
    "key as a copy, so plain load_state_dict(load_file(...), strict=True) works (default: each tied tensor once, "
    "as safetensors.torch.save_model writes it).")]


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only the result: no notes, warnings or progress on "
                                                                 "stderr.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also report what was read and the time taken "
                                                                   "(on stderr).")]


def cast_targets(incomplete: str) -> list[str]:
    """Shell completion for `--dtype`: the dtypes cast writes. The option stays a string because it
    also takes every alias a user may type (half, fp16, torch.float16: units.DTYPE_ALIASES)."""
    return [t.value for t in CastTarget if t.value.startswith(incomplete)]


_MODEL_PARAMS: tuple[tuple[str, Any, Any], ...] = (
    ("model", ModelOpt, None), ("model_arg", ModelArgOpt, None), ("model_kwargs", ModelKwargsOpt, None),
    ("hf_config", HfConfigOpt, None), ("no_hf_config", NoHfConfigOpt, False))


def model_options(*, kwargs: bool = True) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the model-evidence options (--model, --model-arg, --model-kwargs unless `kwargs` is off,
    --hf-config, --no-hf-config), declared here once: Typer sees them as the command's own options, in the place
    of its `evidence` parameter; the command receives them as one `evidence: ModelChoice` keyword."""
    import functools
    import inspect

    params = [p for p in _MODEL_PARAMS if kwargs or p[0] != "model_kwargs"]

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        sig = inspect.signature(func, eval_str=True)  # Typer reads a set __signature__ as it is
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
                 for name, ann, default in params]
        kept = list(sig.parameters.values())
        at = [p.name for p in kept].index("evidence")
        kind = kept[at].kind
        added = [p.replace(kind=kind) for p in added]

        @functools.wraps(func)
        def command(*args: Any, **given: Any) -> None:
            func(*args, evidence=model_choice(**{name: given.pop(name) for name, _, _ in params}), **given)

        command.__signature__ = sig.replace(parameters=kept[:at] + added + kept[at + 1:])  # type: ignore[attr-defined]
        command.__annotations__ = ({k: v for k, v in func.__annotations__.items() if k != "evidence"}
                                   | {name: ann for name, ann, _ in params})
        return command

    return decorate


def model_choice(model: str | None = None, model_arg: list[str] | None = None, model_kwargs: str | None = None,
                 hf_config: str | None = None, no_hf_config: bool = False) -> ModelChoice:
    """The model evidence every classifying command takes the same way: --model (with its arguments),
    --hf-config, else a config.json beside the checkpoint unless --no-hf-config."""
    return ModelChoice(model, tuple(model_arg or ()), model_kwargs, hf_config, auto_hf=not no_hf_config)
