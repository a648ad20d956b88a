"""What a rewrite is asked to do (frozen specs) and where it writes (a frozen Target)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ..vocab import CastOnly, WriteFormat


@dataclass(frozen=True, kw_only=True)
class CastSpec:
    """Cast floating tensors to `dtype`; integer, bool and complex tensors never change."""

    dtype: str
    only: CastOnly | None = None  # a plain "params"/"buffers" too (checked when planning: the error names the flag)
    keep: tuple[str, ...] = ()  # regexes of names left as they are
    keep_buffers: bool = False
    include_optimizer: bool = False


@dataclass(frozen=True, kw_only=True)
class StripSpec:
    """Remove entries by role (buffers, optimizer, EMA) or by name pattern."""

    buffers: bool = False
    non_persistent: bool = False  # needs a model definition (or a full-model pickle)
    optimizer: bool = False
    ema: bool = False
    keep_ema_as_model: bool = False
    patterns: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()  # regexes of names never removed
    force: bool = False  # remove even what the model definition requires


@dataclass(frozen=True, kw_only=True)
class MoveSpec:
    """Record `device` as every tensor's saved location."""

    device: str


@dataclass(frozen=True, kw_only=True)
class ConvertSpec:
    """Change the container format only: every tensor and value as it is, but quantized tensors (a
    GGUF's), which are written dequantized to `dequantize_to`."""

    dequantize_to: str = "bfloat16"


Spec = Union[CastSpec, StripSpec, MoveSpec, ConvertSpec]


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where and how a plan is written; validated by run(), not here, so errors name the input."""

    output: str | None = None
    in_place: bool = False
    to: WriteFormat | None = None  # default from the output's extension
    max_shard_size: str | int | None = None  # "5GB" or bytes: write Hugging Face shards plus an index
    dry_run: bool = False
    strict: bool = False  # refuse to write when a cast overflows or underflows
    drop_unsupported: bool = False  # leave out sparse/quantized/meta tensors instead of refusing
