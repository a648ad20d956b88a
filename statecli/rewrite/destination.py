"""Where a plan goes: the output path, format and layout (one file, shards, a Hugging Face folder, DCP,
stdout) decided from a Target and the input, with every check that needs no writing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from .. import units
from ..errors import UsageError
from ..state import Format
from ..units import itemsize
from ..vocab import WriteFormat
from . import upload
from .hf import source_folder
from .plan import Plan, entry_key
from .result import WriteLog
from .spec import Target
from .tree import model_items, out_dtype

FORMATS = tuple(WriteFormat)
STDOUT = "-"
_FILE_EXTS = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".tar")


class OutputLayout(StrEnum):
    """How an output is laid out on disk (or not: stdout)."""

    FILE = "file"
    SHARDS = "shards"  # safetensors or .bin shards with an index
    HF = "hf"  # shards or one file, plus the input's Hugging Face folder
    DCP = "dcp"
    STDOUT = "stdout"


@dataclass(frozen=True)
class Destination:
    """The resolved output: `layout` is file, shards, hf, dcp or stdout; `path` None for a dry run
    without -o; `hf_source` the input's Hugging Face folder (hf layout); `shard` bytes per shard
    (None for the input's own shards)."""

    path: str | None
    fmt: WriteFormat
    layout: OutputLayout
    shard: int | None = None
    hf_source: str | None = None


def output_format(output: str, to: WriteFormat | str | None, max_shard_size: int | None, in_format: Format) -> WriteFormat:
    """pt, safetensors or dcp: from --to, else the output's extension, else (shards) the input's format."""
    if to:
        if to not in FORMATS:
            raise UsageError(None, f"--to {to!r}: choose pt, safetensors or dcp")
        return WriteFormat(to)
    low = output.lower()
    if low.endswith(".safetensors"):
        return WriteFormat.SAFETENSORS
    if low.endswith(_FILE_EXTS):
        return WriteFormat.PT
    if max_shard_size:
        return _like_input(in_format)
    raise UsageError(output, "cannot tell the output format from the name", "end it in .pt or .safetensors, or pass --to")


def parse_size(text: str | int) -> int:
    n = text if isinstance(text, int) else units.parse_size(text)
    if n is None:
        raise UsageError(None, f"--max-shard-size {text!r} is not a size like 5GB or 500MiB")
    return n


def resolve(plan: Plan, target: Target) -> Destination:
    """The destination after every check that needs no writing."""
    ck, output, in_place = plan.ck, target.output, target.in_place
    if output is not None and in_place:
        raise UsageError(None, "-o/--output and --in-place exclude each other")
    if output is None and not in_place:
        if not target.dry_run:
            raise UsageError(None, "give -o/--output PATH (or --in-place to replace the input, or --dry-run)")
        fmt = output_format("x", target.to or _like_input(ck.format), None, ck.format)  # validates --to
        return Destination(None, fmt, OutputLayout.FILE)
    shard = parse_size(target.max_shard_size) if target.max_shard_size else None
    to = output_format("x", target.to, None, ck.format) if target.to else None  # validates --to
    if output == STDOUT:
        # Without --to, the stream keeps the input's format (a folder of safetensors shards streams as one
        # .safetensors); every other input streams as .pt, the one other format written as one stream.
        to = to or _like_input(ck.format)
        if to not in (WriteFormat.PT, WriteFormat.SAFETENSORS) or shard:
            raise UsageError(None, "-o - writes one .pt or .safetensors stream to stdout: pass --to pt or --to "
                                   "safetensors (no --max-shard-size)")
        return Destination(STDOUT, to, OutputLayout.STDOUT)
    if in_place:
        if len(ck.files) != 1 or os.path.isdir(ck.path):
            raise UsageError(ck.path, "--in-place works on single-file checkpoints only")
        if target.max_shard_size or target.to:
            raise UsageError(ck.path, "--in-place keeps the file's name and format: it does not combine with "
                                      "--to or --max-shard-size", "write to a new path with -o")
        return Destination(ck.path, WriteFormat.SAFETENSORS if ck.format is Format.SAFETENSORS else WriteFormat.PT,
                           OutputLayout.FILE)
    path = str(output)
    if upload.is_url(path):  # written locally, verified, then uploaded (rewrite/upload.py)
        path = upload.output_url(path, [*ck.files, ck.path])
    for f in [*ck.files, ck.path]:
        if os.path.exists(path) and os.path.exists(f) and os.path.samefile(f, path):
            raise UsageError(path, "is the input; statecli never overwrites its input without --in-place")
    if to is WriteFormat.DCP:
        return Destination(path, WriteFormat.DCP, OutputLayout.DCP)
    hf = source_folder(ck.path)
    folderish = not path.lower().endswith(_FILE_EXTS) and (not os.path.exists(path) or os.path.isdir(path))
    if folderish and (hf or ck.format.is_sharded or shard):
        fmt = to or (WriteFormat.SAFETENSORS if hf else _like_input(ck.format))
        if hf:
            return Destination(path, fmt, OutputLayout.HF, shard, hf)
        return Destination(path, fmt, OutputLayout.SHARDS, shard)
    fmt = output_format(path, to, shard, ck.format)
    return Destination(path, fmt, OutputLayout.SHARDS if shard else OutputLayout.FILE, shard)


def _like_input(in_format: Format) -> WriteFormat:
    """The output format when nothing names one: safetensors for a safetensors input, else pt."""
    return WriteFormat.SAFETENSORS if in_format.family is WriteFormat.SAFETENSORS else WriteFormat.PT


def planned_bytes(plan: Plan, fmt: WriteFormat) -> int:
    """Tensor bytes the output will hold at least: storages written whole for .pt (counted once, at
    their output dtype), distinct views of the model state for tensor-only formats."""
    if fmt is WriteFormat.PT and not plan.ck.is_pickled_module:
        total, seen = 0, set()
        for e in plan.ck.entries:
            t = e.tensor
            if t is None or entry_key(e) in plan.drop:
                continue
            key = t.storage_id or id(e)
            if key in seen:
                continue
            seen.add(key)
            nbytes = t.storage_size
            total += nbytes // itemsize(t.storage_dtype or t.dtype) * itemsize(out_dtype(plan, e))
        return total
    views = {}
    for _, e in model_items(plan, WriteLog()):
        t = e.tensor
        assert t is not None
        views[(t.source, t.storage_key, t.storage_offset, t.shape, t.stride) if t.storage_key else id(e)] = (
            t.numel * itemsize(out_dtype(plan, e)))
    return sum(views.values())
