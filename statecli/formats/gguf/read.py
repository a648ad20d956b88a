"""A GGUF checkpoint: one file, or every part of a split model (`name-00002-of-00005.gguf`, `split.*`
keys) read as one from any of its parts. Tensors become TensorInfos in torch order: plain GGML types
as the torch dtype they are, block-quantized ones as the shared quantized model (qtensor.py)."""

from __future__ import annotations

import math
import os
import re
import threading
import zlib
from collections import OrderedDict
from typing import Any

from ...errors import BadInput, StatecliError, UnsafeContent
from ...io.source import RemoteSource, open_local
from ...io.urls import is_remote, map_concurrent
from ...qtensor import GGUF_METHOD, QuantInfo
from ...state import Evidence, Format, Kind, Source, TensorInfo
from ...vocab import Layout
from .._common import RawCheckpoint
from .header import GgufArray, Header, TensorRecord, read_header
from .types import COMPUTED, FILE_TYPES, PLAIN, ValueType

SPLIT_NAME = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
MAX_PARTS = 9999
SHOWN_ITEMS = 5  # array items a table shows; --format json has them all
TORCH_ORDER = "shapes in torch order (GGUF stores dimensions innermost first)"
_CACHE: OrderedDict[str, tuple[Header, ...]] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def part_name(stem: str, no: int, count: int) -> str:
    return f"{stem}-{no:05d}-of-{count:05d}.gguf"


def read_parts(path: str) -> tuple[Header, ...]:
    """The headers of every part of the model `path` belongs to, in split order (one for a plain file);
    remembered for the latest few paths, so the metadata views do not parse a header twice, and
    reused only while each local part still holds the same header bytes (a file rewritten within one
    mtime tick is parsed again)."""
    with _CACHE_LOCK:
        cached = _CACHE.get(path)
    if cached is not None and all(_unchanged(h) for h in cached):
        return cached
    parts = _read_parts(path)
    with _CACHE_LOCK:
        _CACHE[path] = parts
        while len(_CACHE) > 8:
            _CACHE.popitem(last=False)
    return parts


def _unchanged(head: Header) -> bool:
    if is_remote(head.path):  # its size as io.source knows it (cached until clear_cache): no re-read
        try:
            return RemoteSource(head.path).size == head.size
        except StatecliError:
            return False
    try:
        with open_local(head.path) as f:  # a regular file still, never a FIFO put in its place
            same_size = os.fstat(f.fileno()).st_size == head.size
            return same_size and zlib.crc32(f.read(head.header_bytes)) == head.crc
    except (OSError, StatecliError):
        return False


def _read_parts(path: str) -> tuple[Header, ...]:
    first = read_header(path)
    count = first.metadata.get("split.count")
    if count is None or count == 1:
        return (first,)
    m = SPLIT_NAME.match(path)
    no = first.metadata.get("split.no")
    if not isinstance(count, int) or not 1 <= count <= MAX_PARTS or not isinstance(no, int) or not 0 <= no < count:
        raise BadInput(path, f"corrupt GGUF split keys: split.no {no!r} of split.count {count!r}")
    if m is None or int(m["no"]) != no + 1 or int(m["count"]) != count:
        raise BadInput(path, f"part {no + 1} of {count} of a split GGUF must be named "
                             f"'...-{no + 1:05d}-of-{count:05d}.gguf' to find its other parts")
    names = [part_name(m["stem"], i + 1, count) for i in range(count)]
    others = map_concurrent(read_header, [n for i, n in enumerate(names) if i != no], threads=8)
    parts: list[Header] = []
    for i, name in enumerate(names):
        got = first if i == no else others[name]
        if isinstance(got, BaseException):
            raise got
        if got.metadata.get("split.no") != i or got.metadata.get("split.count") != count:
            raise BadInput(name, f"split keys say part {got.metadata.get('split.no')!r} of "
                                 f"{got.metadata.get('split.count')!r}, its name says {i} of {count}")
        parts.append(got)
    declared = parts[0].metadata.get("split.tensors.count")
    total = sum(len(p.tensors) for p in parts)
    if declared is not None and declared != total:
        raise BadInput(names[0], f"split.tensors.count says {declared} tensors, the {count} parts hold {total}")
    return tuple(parts)


def tensor_info(rec: TensorRecord, head: Header) -> TensorInfo:
    """A stored tensor as the shared model has it: plain types as torch dtypes, block types quantized."""
    plain = PLAIN.get(rec.type.name)
    where = dict(source=head.path, data_offset=head.data_start + rec.offset, storage_key=rec.name,
                 storage_nbytes=rec.nbytes)
    if plain is not None:
        return TensorInfo(plain, rec.shape, **where)  # type: ignore[arg-type]
    quant = QuantInfo(scheme=f"GGUF {rec.type.name}", method=GGUF_METHOD, compute_dtype="float32",
                      block=(rec.type.block,))
    return TensorInfo(rec.type.name, rec.shape, layout=Layout.QUANTIZED, stored_nbytes=rec.nbytes, quant=quant,
                      **where)  # type: ignore[arg-type]


def kind_of(name: str) -> tuple[Kind, Evidence]:
    """A GGUF holds the weights a runtime loads: parameters, but for the tables runtimes compute from
    hyperparameters (gguf's ROPE_FREQS/ROPE_FACTORS_*), which are buffers."""
    if name.removesuffix(".weight") in COMPUTED:
        return Kind.BUFFER, Evidence(Source.FORMAT, "GGUF computed tensor")
    return Kind.PARAMETER, Evidence(Source.FORMAT, "GGUF tensor")


def read(path: str) -> RawCheckpoint:
    from .checks import template_findings

    parts = read_parts(path)
    found, unchecked = template_findings(parts)
    if found:
        more = f" (and {len(found) - 2} more)" if len(found) > 2 else ""
        raise UnsafeContent(path, "GGUF chat template reaches code a runtime's render would run: "
                            + "; ".join(found[:2]) + more,
                            "refusing the file; do not serve it (statecli scan lists every finding)")
    root: dict[str, TensorInfo] = {}
    kinds: dict[str, tuple[Kind, Evidence]] = {}
    for head in parts:
        for rec in head.tensors:
            if rec.name in root:
                raise BadInput(head.path, f"tensor {rec.name!r} appears in two parts of the split model")
            root[rec.name] = tensor_info(rec, head)
            kinds[rec.name] = kind_of(rec.name)
    raw = RawCheckpoint(path=path, format=Format.GGUF, root=root, files=[p.path for p in parts],
                        metadata=summary(parts[0]), kinds=kinds)
    raw.warnings += unchecked
    raw.warnings += [f"{p.path}: {n:,} bytes at {a:,}..{b:,} belong to no tensor (a place data hides; "
                     "statecli scan reports it)" for p in parts for a, b in p.hidden for n in [b - a]]
    return raw


def describe(value: Any, limit: int = SHOWN_ITEMS) -> str:
    """One metadata value as a table shows it: arrays by their length and first items."""
    if isinstance(value, GgufArray):
        what = "strings" if value.item_type.name == "STRING" else value.item_type.name.lower()
        head = ", ".join(repr(v) if isinstance(v, str) else describe(v, 2) for v in value.head(limit))
        more = ", ..." if len(value) > limit else ""
        return f"{len(value):,} {what}: [{head}{more}]"
    return str(value)


def summary(head: Header) -> dict[str, str]:
    """The metadata as text (the checkpoint's `metadata`): arrays summarised, the file type named."""
    out = {k: describe(v) for k, v in head.metadata.items()}
    ft = head.metadata.get("general.file_type")
    if isinstance(ft, int) and ft in FILE_TYPES:
        out["general.file_type"] = f"{ft} ({FILE_TYPES[ft]})"
    return out


def to_json(value: Any) -> Any:
    """A metadata value in full, as JSON has it (arrays as lists; floats that JSON cannot hold as text)."""
    if isinstance(value, GgufArray):
        items = list(value.values)
        if value.item_type in (ValueType.ARRAY, ValueType.FLOAT32, ValueType.FLOAT64):
            return [to_json(v) for v in items]
        return items
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


__all__ = ["TORCH_ORDER", "describe", "kind_of", "part_name", "read", "read_parts", "summary", "tensor_info",
           "to_json"]
