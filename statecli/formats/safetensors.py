"""safetensors files: an 8-byte little-endian header length, a JSON header, then the data; read
and validated from the header alone."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from ..errors import BadInput
from ..io.limits import load_json
from ..state import Format, TensorInfo
from ..units import itemsize
from ._common import RawCheckpoint, open_regular, read_exact
from .handler import BaseHandler

if TYPE_CHECKING:
    from ..pickle.pickles import Findings

MAX_HEADER = 100_000_000  # the safetensors library's own cap
ALIASES_KEY = "statecli.aliases"  # JSON {copy: original}: tied keys a --duplicate-tied output stores as copies

DTYPES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "F4": "float4_e2m1fn_x2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64", "C128": "complex128",
}
TO_SAFETENSORS = {v: k for k, v in DTYPES.items()}


def detect(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER and head[8:9] == b"{"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # the first key seen twice, named as before
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r} in header")
            seen.add(k)
    return out


def read_header(path: str) -> tuple[dict[str, Any], int, int]:
    """(header dict, byte offset where data starts, file size), after every structural check."""
    with open_regular(path) as f:
        size = f.seek(0, 2)
        if size < 8:
            raise BadInput(path, f"truncated safetensors file: {size} bytes, no header length")
        (n,) = struct.unpack("<Q", read_exact(f, 0, 8, path, "header length"))
        if n > MAX_HEADER:
            raise BadInput(path, f"safetensors header length {n} exceeds the {MAX_HEADER}-byte cap")
        if 8 + n > size:
            raise BadInput(path, f"truncated safetensors file: header of {n} bytes but the file has {size}")
        text = read_exact(f, 8, n, path, "header")
    try:
        header = load_json(text, object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(path, f"malformed safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise BadInput(path, "malformed safetensors header: not a JSON object")
    return header, 8 + n, size


def read(path: str) -> RawCheckpoint:
    header, start, size = read_header(path)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise BadInput(path, "malformed safetensors header: __metadata__ must map strings to strings")
    spans: list[tuple[int, int, str]] = []
    root: dict[str, TensorInfo] = {}
    for name, rec in header.items():
        if (type(rec) is not dict or len(rec) != 3 or "dtype" not in rec or "shape" not in rec
                or "data_offsets" not in rec):
            raise BadInput(path, f"malformed safetensors header: entry {name!r} needs dtype, shape, data_offsets")
        dtype = DTYPES.get(rec["dtype"]) if isinstance(rec["dtype"], str) else None
        if dtype is None:
            raise BadInput(path, f"tensor {name!r} has unknown dtype {rec['dtype']!r}")
        shape, offs = rec["shape"], rec["data_offsets"]
        # JSON gives int, bool or float: `type(x) is int` is "an int, not a bool"
        if type(shape) is not list or not all(type(s) is int and s >= 0 for s in shape):
            raise BadInput(path, f"tensor {name!r} has a malformed shape {shape!r:.60}")
        if (type(offs) is not list or len(offs) != 2 or type(offs[0]) is not int or type(offs[1]) is not int
                or not 0 <= offs[0] <= offs[1]):
            raise BadInput(path, f"tensor {name!r} has malformed data_offsets {offs!r:.60}")
        begin, end = offs
        info = TensorInfo(dtype, tuple(shape), "cpu", storage_key=name, source=path, data_offset=start + begin,
                          storage_nbytes=end - begin)
        # F4 packs two values per byte along the last dimension in safetensors' accounting.
        want = info.numel * itemsize(dtype) if dtype != "float4_e2m1fn_x2" else (info.numel + 1) // 2
        if end - begin != want:
            raise BadInput(path, f"tensor {name!r}: {dtype} {list(shape)} needs {want} bytes but data_offsets "
                                 f"span {end - begin}")
        if start + end > size:
            raise BadInput(path, f"truncated file: tensor {name!r} ends at byte {start + end}, file has {size}")
        spans.append((begin, end, name))
        root[name] = info
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin < pos:
            raise BadInput(path, f"tensor {name!r} overlaps the tensor before it in the data section")
        if begin > pos:
            raise BadInput(path, f"gap in the data section before tensor {name!r} (bytes {pos}..{begin})")
        pos = end
    if start + pos != size:
        raise BadInput(path, f"data section holds {size - start} bytes but the tensors cover {pos}")
    raw = RawCheckpoint(path=path, format=Format.SAFETENSORS, root=root, files=[path], metadata=dict(meta))
    _restore_aliases(raw, root, meta)
    return raw


def recorded_aliases(meta: Mapping[str, str], stored: Iterable[str]) -> dict[str, str]:
    """{alias: stored name} for tied keys a file leaves out: safetensors.torch.save_model's entries
    (metadata[alias] = kept name) and statecli's older ALIASES_KEY record. An alias that is itself
    stored (a --duplicate-tied copy) is not left out and not listed here."""
    names = set(stored)
    out = {k: v for k, v in meta.items() if k not in names and k != "format" and v in names}
    try:
        legacy = load_json(meta.get(ALIASES_KEY) or "{}")
    except ValueError:
        legacy = {}
    if isinstance(legacy, dict):
        out |= {str(a): str(t) for a, t in legacy.items() if str(a) not in names and str(t) in names}
    return out


def _restore_aliases(raw: RawCheckpoint, root: dict[str, TensorInfo], meta: dict[str, str]) -> None:
    """Tied keys the file leaves out are never listed as stored tensors (load_file does not return
    them); load.py names them as aliases. Only a malformed statecli record is worth a warning here."""
    text = meta.get(ALIASES_KEY)
    if not text:
        return
    try:
        aliases = load_json(text)
    except ValueError:
        aliases = None
    if not isinstance(aliases, dict):
        raw.warnings.append(f"ignoring malformed {ALIASES_KEY} metadata")


# -- write side: header and tensor streaming (driven by statecli.rewrite) ---------------------------

class WriteItem(NamedTuple):
    """One tensor of a safetensors output; its bytes come from `chunks()`, in write order."""

    name: str
    dtype: str  # torch name, e.g. float16
    shape: tuple[int, ...]
    nbytes: int
    chunks: Callable[[], Iterable[bytes | memoryview]]


def encode_header(items: Sequence[tuple[str, str, tuple[int, ...], int]], metadata: Mapping[str, str]) -> bytes:
    """Header bytes (length prefix included) for (name, safetensors dtype, shape, nbytes) in write order."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    pos = 0
    for name, dtype, shape, nbytes in items:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)  # the safetensors library pads the header to 8 bytes
    return struct.pack("<Q", len(text)) + text


def write(f: IO[bytes], items: Sequence[WriteItem], metadata: Mapping[str, str]) -> None:
    """Write a safetensors file: the header, then each item's bytes, checked against its declared size."""
    f.write(encode_header([(i.name, TO_SAFETENSORS[i.dtype], i.shape, i.nbytes) for i in items], metadata))
    for item in items:
        written = 0
        for chunk in item.chunks():
            f.write(chunk)
            written += chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
        if written != item.nbytes:
            raise RuntimeError(f"{item.name!r}: wrote {written} bytes, expected {item.nbytes}")


class SafetensorsHandler(BaseHandler):
    """safetensors files: no pickle anywhere, so a scan is the reader's header validation."""

    format = Format.SAFETENSORS
    writer = staticmethod(write)

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return detect(head)

    def read(self, source: str) -> RawCheckpoint:
        return read(source)

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        read(source)
        return Format.SAFETENSORS


HANDLER = SafetensorsHandler()
