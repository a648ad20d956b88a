"""A GGUF file's header, parsed from a byte source (a local file or a URL read by ranges): the
metadata key-values and the tensor infos, every count, length and offset checked against the file's
size and a sane cap before anything is allocated. Reads grow geometrically from the file's start, so
a remote header costs a few requests and less than twice its bytes; the tensor data is never read.

GGUF (llama.cpp's docs/gguf.md): "GGUF", u32 version, u64 tensor count, u64 key-value count, the
key-values, the tensor infos (name, u32 n_dims, u64 dims innermost first, u32 GGML type, u64 offset
into the data section), padding to `general.alignment`, the data section."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from ...errors import BadInput
from ...io.source import MAX_RANGE, Source, cached_prefix, open_source
from .types import SCALAR_CODES, GgmlType, ValueType, ggml_type

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
FIRST_READ = 256 << 10  # most headers without a vocabulary fit; a 150k vocabulary takes ~4 more reads
MAX_HEADER = 1 << 30  # metadata + tensor infos: a 256k vocabulary with merges is ~20 MB
MAX_TENSORS = 1 << 20  # llama 405B has ~1,100; a 256-expert MoE stored per expert ~60k
MAX_KV = 1 << 20
MAX_STRING = 64 << 20  # a chat template is kilobytes; nothing in a header is near this
MAX_NAME = 4096  # ggml's own limit is 64 bytes; longer names are refused by llama.cpp, shown here
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_DEPTH = 4  # arrays of arrays of ...: the spec allows nesting; nothing real nests past 2
MAX_NUMEL = 1 << 48
# The fewest bytes one item of each value type takes (a string: its u64 length; an array: type + count).
_U64 = struct.Struct("<Q")
_MIN_SIZE = {t: struct.calcsize(c) for t, c in SCALAR_CODES.items()} | {ValueType.STRING: 8, ValueType.ARRAY: 12}


class GgufArray:
    """A metadata array: its element type and values (a tuple; nested arrays are GgufArrays). An array
    of strings keeps its stored bytes and decodes them when its values are first asked for: a 150k
    vocabulary is walked once to find its end, and a table shows only its first items."""

    def __init__(self, item_type: ValueType, values: tuple[Any, ...] = (), raw: bytes | None = None,
                 count: int | None = None) -> None:
        self.item_type, self._raw = item_type, raw
        self._count = len(values) if count is None else count
        self._values = values if raw is None else None

    @property
    def values(self) -> tuple[Any, ...]:
        if self._values is None:
            self._values = tuple(self.head(self._count))
        return self._values

    def head(self, n: int) -> tuple[Any, ...]:
        """The first `n` values, decoding no more strings than that."""
        if self._raw is None or self._values is not None:
            return self.values[:n]
        raw, pos, out = self._raw, 0, []
        for _ in range(min(n, self._count)):
            (ln,) = _U64.unpack_from(raw, pos)
            out.append(raw[pos + 8:pos + 8 + ln].decode("utf-8", "replace"))
            pos += 8 + ln
        return tuple(out)

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GgufArray) or other.item_type != self.item_type or len(other) != len(self):
            return False
        if self._raw is not None and other._raw is not None:
            return self._raw == other._raw
        return self.values == other.values

    def __hash__(self) -> int:
        return hash((self.item_type, self._count))

    def __repr__(self) -> str:
        return f"GgufArray({self.item_type.name}, {self._count} items)"


@dataclass(frozen=True)
class TensorRecord:
    """One tensor info as stored: dims innermost first (GGUF order), offset into the data section."""

    name: str
    dims: tuple[int, ...]
    type: GgmlType
    offset: int
    numel: int
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """torch order: GGUF stores ne[0] (the contiguous dimension) first."""
        return tuple(reversed(self.dims))


@dataclass(frozen=True)
class Header:
    path: str
    size: int
    version: int
    metadata: dict[str, Any]  # scalars as Python values, arrays as GgufArray
    value_types: dict[str, ValueType]
    tensors: tuple[TensorRecord, ...]
    alignment: int
    data_start: int
    header_bytes: int  # bytes read to parse it (the end of the tensor infos)
    hidden: tuple[tuple[int, int], ...]  # byte ranges of the data section no tensor or padding explains
    crc: int = 0  # CRC-32 of the header's bytes: a remembered parse is reused only for the same bytes


class _Cursor:
    """Little-endian reads from the start of a Source through a buffer that doubles as it is used up."""

    def __init__(self, src: Source) -> None:
        self.src, self.buf, self.pos = src, bytearray(cached_prefix(src.name)), 0

    def need(self, n: int, what: str) -> None:
        end = self.pos + n
        if end <= len(self.buf):
            return
        if end > self.src.size:
            raise BadInput(self.src.name, f"truncated GGUF header: {what} at byte {self.pos} needs {n} bytes, "
                                          f"the file has {self.src.size}")
        if end > MAX_HEADER:
            raise BadInput(self.src.name, f"GGUF header larger than {MAX_HEADER:,} bytes ({what} at byte {self.pos}); "
                                          "not read")
        want = min(self.src.size, max(end, 2 * len(self.buf), FIRST_READ))
        for off in range(len(self.buf), want, MAX_RANGE):
            self.buf += self.src.pread(off, min(MAX_RANGE, want - off))

    def scalar(self, code: str, what: str) -> Any:
        size = struct.calcsize(code)
        self.need(size, what)
        (v,) = struct.unpack_from("<" + code, self.buf, self.pos)
        self.pos += size
        return v

    def many(self, code: str, count: int, what: str) -> tuple[Any, ...]:
        size = struct.calcsize(code) * count
        self.need(size, what)
        out = struct.unpack_from(f"<{count}{code}", self.buf, self.pos)
        self.pos += size
        return out

    def string(self, what: str, cap: int = MAX_STRING) -> str:
        n = self.scalar("Q", what)
        if n > cap or self.pos + n > self.src.size:
            raise BadInput(self.src.name, f"corrupt GGUF header: {what} declares a {n:,}-byte string "
                                          f"(cap {cap:,}, file {self.src.size:,} bytes)")
        self.need(n, what)
        text = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return text

    def left(self) -> int:
        return self.src.size - self.pos


def _count(cur: _Cursor, n: int, each: int, cap: int, what: str) -> int:
    """A declared count checked before use: under `cap` and able to fit in what is left of the file."""
    if n > cap or n * each > cur.left():
        raise BadInput(cur.src.name, f"corrupt GGUF header: {what} declares {n:,} items, which cannot fit in the "
                                     f"{cur.left():,} bytes left of the file (cap {cap:,})")
    return n


def _value(cur: _Cursor, vtype: int, key: str, depth: int = 0) -> tuple[ValueType, Any]:
    try:
        vt = ValueType(vtype)
    except ValueError:
        raise BadInput(cur.src.name, f"corrupt GGUF header: key {key!r} has unknown value type {vtype}") from None
    if vt is ValueType.STRING:
        return vt, cur.string(f"value of {key!r}")
    if vt is not ValueType.ARRAY:
        return vt, cur.scalar(SCALAR_CODES[vt], f"value of {key!r}")
    return vt, _array(cur, key, depth)


def _array(cur: _Cursor, key: str, depth: int) -> GgufArray:
    if depth >= MAX_DEPTH:
        raise BadInput(cur.src.name, f"corrupt GGUF header: key {key!r} nests arrays more than {MAX_DEPTH} deep")
    raw_type = cur.scalar("I", f"array type of {key!r}")
    try:
        item = ValueType(raw_type)
    except ValueError:
        raise BadInput(cur.src.name, f"corrupt GGUF header: array {key!r} has unknown item type {raw_type}") from None
    n = _count(cur, cur.scalar("Q", f"array length of {key!r}"), _MIN_SIZE[item], 1 << 40, f"array {key!r}")
    if item in SCALAR_CODES:
        return GgufArray(item, cur.many(SCALAR_CODES[item], n, f"array {key!r}"))
    if item is ValueType.STRING:
        cur.need(n * 8, f"array {key!r}")  # its length prefixes at least: one read, not a doubling per 64 KiB
        start = cur.pos
        _skip_strings(cur, n, key)
        return GgufArray(item, raw=bytes(cur.buf[start:cur.pos]), count=n)
    return GgufArray(item, tuple(_value(cur, item, key, depth + 1)[1] for _ in range(n)))


def _skip_strings(cur: _Cursor, n: int, key: str) -> None:
    """Past `n` length-prefixed strings, each length checked against the cap and the file (the hot
    loop of a vocabulary: the buffer is grown only when a string runs past it)."""
    buf, pos, unpack = cur.buf, cur.pos, _U64.unpack_from
    start, have = pos, len(buf)  # a string inside the buffer is inside the file: only one past it is checked
    for i in range(n):
        if pos + 8 > have:
            # the rest of the array at the average size so far: one more read, not a doubling per 64 KiB
            cur.pos = pos
            cur.need(min(cur.left(), max(8, (n - i) * (pos - start) // max(i, 1) * 9 // 8)), f"item of {key!r}")
            have = len(buf)
        end = pos + 8 + unpack(buf, pos)[0]
        if end > have:
            ln = end - pos - 8
            if ln > MAX_STRING or end > cur.src.size:
                raise BadInput(cur.src.name, f"corrupt GGUF header: an item of {key!r} declares a {ln:,}-byte "
                                             f"string (cap {MAX_STRING:,}, file {cur.src.size:,} bytes)")
            cur.pos = pos + 8
            cur.need(ln, f"item of {key!r}")
            have = len(buf)
        pos = end
    cur.pos = pos


def _preamble(cur: _Cursor) -> tuple[int, int, int]:
    name = cur.src.name
    cur.need(4, "magic")
    if bytes(cur.buf[:4]) != MAGIC:
        raise BadInput(name, "not a GGUF file (no GGUF magic)")
    cur.pos = 4
    version = cur.scalar("I", "version")
    if version not in VERSIONS:
        swapped = struct.unpack(">I", struct.pack("<I", version))[0]
        if swapped in VERSIONS:
            raise BadInput(name, f"a big-endian GGUF (version {swapped}): statecli reads little-endian GGUF only")
        if version == 1:
            raise BadInput(name, "GGUF version 1 (before August 2023, 32-bit counts) is not read; re-convert it")
        raise BadInput(name, f"unsupported GGUF version {version} (statecli reads versions 2 and 3)")
    n_tensors = _count(cur, cur.scalar("Q", "tensor count"), 32, MAX_TENSORS, "the tensor count")
    n_kv = _count(cur, cur.scalar("Q", "metadata count"), 13, MAX_KV, "the metadata count")
    return version, n_tensors, n_kv


def _tensor_info(cur: _Cursor) -> tuple[str, tuple[int, ...], GgmlType, int]:
    name = cur.string("tensor name", MAX_NAME)
    n_dims = cur.scalar("I", f"dimension count of {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise BadInput(cur.src.name, f"corrupt GGUF header: tensor {name!r} has {n_dims} dimensions "
                                     f"(GGML allows 1 to {MAX_DIMS})")
    dims = cur.many("Q", n_dims, f"dimensions of {name!r}")
    type_id = cur.scalar("I", f"type of {name!r}")
    gt = ggml_type(type_id)
    if gt is None:
        raise BadInput(cur.src.name, f"tensor {name!r} has unknown GGML type {type_id}")
    return name, dims, gt, cur.scalar("Q", f"offset of {name!r}")


def read_header(path: str) -> Header:
    """The validated header of one GGUF file (local or URL)."""
    with open_source(path) as src:
        return parse(src)


def parse(src: Source) -> Header:
    cur = _Cursor(src)
    version, n_tensors, n_kv = _preamble(cur)
    meta: dict[str, Any] = {}
    vtypes: dict[str, ValueType] = {}
    for _ in range(n_kv):
        key = cur.string("metadata key", MAX_NAME)
        if key in meta:
            raise BadInput(src.name, f"corrupt GGUF header: metadata key {key!r} appears twice")
        vtypes[key], meta[key] = _value(cur, cur.scalar("I", f"value type of {key!r}"), key)
    alignment = _alignment(src.name, meta, vtypes)
    infos = [_tensor_info(cur) for _ in range(n_tensors)]
    header_end = cur.pos
    data_start = -(-header_end // alignment) * alignment
    tensors, hidden = _layout(src, infos, alignment, data_start)
    return Header(src.name, src.size, version, meta, vtypes, tensors, alignment, data_start, header_end, hidden,
                  zlib.crc32(memoryview(cur.buf)[:header_end]))


def _alignment(name: str, meta: dict[str, Any], vtypes: dict[str, ValueType]) -> int:
    if "general.alignment" not in meta:
        return DEFAULT_ALIGNMENT
    a = meta["general.alignment"]
    if vtypes["general.alignment"] is not ValueType.UINT32 or a <= 0 or a & (a - 1) or a > 1 << 20:
        raise BadInput(name, f"corrupt GGUF header: general.alignment {a!r} is not a power of two up to 1 MiB "
                             "stored as u32")
    return int(a)


def _layout(src: Source, infos: list[tuple[str, tuple[int, ...], GgmlType, int]], alignment: int,
            data_start: int) -> tuple[tuple[TensorRecord, ...], tuple[tuple[int, int], ...]]:
    """Tensor records with their sizes, each checked to be aligned, inside the file and apart from the
    others; and the byte ranges of the data section no tensor (or its padding) accounts for."""
    name = src.name
    out: list[TensorRecord] = []
    seen: set[str] = set()
    for tname, dims, gt, offset in infos:
        if tname in seen:
            raise BadInput(name, f"corrupt GGUF header: tensor {tname!r} is listed twice")
        seen.add(tname)
        numel = 1
        for d in dims:
            numel *= d
        if numel > MAX_NUMEL:
            raise BadInput(name, f"corrupt GGUF header: tensor {tname!r} declares {numel:,} elements")
        if dims[0] % gt.block:
            raise BadInput(name, f"corrupt GGUF header: tensor {tname!r} rows of {dims[0]} values are not whole "
                                 f"{gt.name} blocks of {gt.block}")
        if offset % alignment:
            raise BadInput(name, f"corrupt GGUF header: tensor {tname!r} at data offset {offset} is not aligned "
                                 f"to {alignment} bytes")
        nbytes = gt.nbytes(numel)
        if data_start + offset + nbytes > src.size:
            raise BadInput(name, f"truncated file: tensor {tname!r} ends at byte {data_start + offset + nbytes:,}, "
                                 f"the file has {src.size:,}")
        out.append(TensorRecord(tname, tuple(dims), gt, offset, numel, nbytes))
    hidden: list[tuple[int, int]] = []
    pos = 0
    for rec in sorted(out, key=lambda r: (r.offset, r.nbytes)):
        if rec.offset < pos:
            raise BadInput(name, f"corrupt GGUF header: tensor {rec.name!r} overlaps the tensor before it")
        if rec.offset > _aligned(pos, alignment):
            hidden.append((data_start + pos, data_start + rec.offset))
        pos = rec.offset + rec.nbytes
    end = data_start + _aligned(pos, alignment) if out else data_start
    if src.size > max(end, data_start + pos) and src.size > data_start:
        hidden.append((data_start + pos, src.size))
    return tuple(out), tuple(hidden)


def _aligned(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


__all__ = ["GgufArray", "Header", "TensorRecord", "parse", "read_header"]
