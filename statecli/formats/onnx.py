"""ONNX models, read-only: statecli's own reader of the protobuf wire format (no `onnx` import: it costs
a second and reads every weight byte), walking ModelProto -> GraphProto -> TensorProto headers and
skipping the weight bytes. Initializers are listed with dtype and shape; their values are read in place
(raw_data, packed float/double data) or from external data files, whose references are checked against
the model's folder before anything is read: an absolute path, `..`, a link leaving the folder or a range
past the file is a finding (exit 3), and such a file is never opened. A remote model is walked the same way
over blocks fetched by range requests: the weight bytes the walk skips are never requested."""

from __future__ import annotations

import math
import mmap
import os
import stat
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, UnsafeContent
from ..io.source import Source as ByteSource
from ..io.source import open_source
from ..io.urls import is_remote
from ..pickle.pickles import Findings, GlobalRef
from ..state import Checkpoint, Evidence, Format, Kind, Source, TensorInfo, Verdict
from ..units import itemsize
from ..vocab import Layout
from ._common import RawCheckpoint, open_regular
from .handler import BaseHandler
from .onnxvalues import VARINT_FIELDS, Packed

if TYPE_CHECKING:
    from ..io.values import ValueReader

HINT = "refusing the model; its external data would be read from outside its folder (statecli scan lists it)"
# onnx.TensorProto.DataType -> torch dtype name (None: no torch dtype; listed, values not read)
_DTYPES: dict[int, str | None] = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: None, 9: "bool",
    10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64", 15: "complex128", 16: "bfloat16",
    17: "float8_e4m3fn", 18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz"}
# packed float_data of FLOAT/COMPLEX64, double_data of DOUBLE/COMPLEX128: the bytes as stored
_IN_PLACE = {4: frozenset({1, 14}), 10: frozenset({11, 15})}
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"})
MAX_DEPTH = 64  # subgraphs (If/Loop bodies) nested deeper than any exporter writes


@dataclass(frozen=True)
class External:
    """An initializer's external data reference, as written."""

    location: str
    offset: int
    length: int | None


@dataclass
class Model:
    """What the reader found: initializers, opsets and op domains, external-data findings."""

    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)
    domains: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)  # domains of the model's own local functions
    problems: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)  # initializers with no value statecli reads (strings)
    packed: dict[str, Packed] = field(default_factory=dict)  # varint-packed values (onnxvalues decodes them)
    sparse: dict[str, str] = field(default_factory=dict)  # sparse initializers: their values/indices shapes


class _Wire:
    """Protobuf wire format over a read-only map of the file: only the bytes of headers are touched."""

    def __init__(self, buf: mmap.mmap | bytes | _Paged, path: str) -> None:
        self.buf, self.path = buf, path

    def bad(self, what: str) -> BadInput:
        return BadInput(self.path, f"not a valid ONNX model: {what}")

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= end:
                raise self.bad(f"truncated varint at byte {pos}")
            b = self.buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value, pos
            shift += 7
            if shift >= 64:
                raise self.bad(f"varint longer than 10 bytes at byte {pos}")

    def fields(self, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """(field, wire type, value or payload offset, payload length) of each field in [pos, end)."""
        while pos < end:
            key, pos = self.varint(pos, end)
            num, wt = key >> 3, key & 7
            if num == 0:
                raise self.bad(f"field number 0 at byte {pos}")
            if wt == 0:
                value, pos = self.varint(pos, end)
                yield num, wt, value, 0
            elif wt == 2:
                n, pos = self.varint(pos, end)
                if n > end - pos:
                    raise self.bad(f"a {n}-byte field at byte {pos} runs past its message")
                yield num, wt, pos, n
                pos += n
            elif wt in (1, 5):
                n = 8 if wt == 1 else 4
                if n > end - pos:
                    raise self.bad(f"truncated fixed field at byte {pos}")
                yield num, wt, int.from_bytes(self.buf[pos:pos + n], "little"), 0
                pos += n
            else:
                raise self.bad(f"wire type {wt} at byte {pos}")

    def text(self, pos: int, n: int) -> str:
        return bytes(self.buf[pos:pos + n]).decode("utf-8", "replace")


class _Paged:
    """A remote model's bytes as `_Wire` indexes them, fetched in aligned blocks by range requests on
    first touch: the walk reads headers only, so the weight bytes it skips are never requested."""

    BLOCK = 64 << 10

    def __init__(self, src: ByteSource) -> None:
        self.src = src
        self.blocks: dict[int, bytes] = {}

    def _block(self, no: int) -> bytes:
        got = self.blocks.get(no)
        if got is None:
            start = no * self.BLOCK
            got = self.blocks[no] = self.src.pread(start, min(self.BLOCK, self.src.size - start))
        return got

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, int):
            return self._block(key // self.BLOCK)[key % self.BLOCK]
        lo, hi = key.start, min(key.stop, self.src.size)
        return b"".join(self._block(no)[max(lo - no * self.BLOCK, 0):hi - no * self.BLOCK]
                        for no in range(lo // self.BLOCK, -(-hi // self.BLOCK)))


def read_model(path: str) -> Model:
    if is_remote(path):
        with open_source(path) as src:
            if src.size == 0:
                raise BadInput(path, "empty file")
            return _walk(_Wire(_Paged(src), path), src.size)
    with open_regular(path) as f:
        size = f.seek(0, 2)
        if size == 0:
            raise BadInput(path, "empty file")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _walk(_Wire(buf, path), size)
    finally:
        buf.close()


def _walk(w: _Wire, size: int) -> Model:
    model = Model()
    for num, wt, pos, n in w.fields(0, size):
        if num == 8 and wt == 2:
            _opset(w, pos, pos + n, model)
        elif num == 7 and wt == 2:
            _graph(w, pos, pos + n, model, "", 0)
        elif num == 25 and wt == 2:  # a local function: its nodes' domains are loaded as well
            _function(w, pos, pos + n, model)
    return model


def _opset(w: _Wire, pos: int, end: int, model: Model) -> None:
    domain, version = "", 0
    for num, wt, p, n in w.fields(pos, end):
        if num == 1 and wt == 2:
            domain = w.text(p, n)
        elif num == 2 and wt == 0:
            version = p
    model.opsets[domain or "ai.onnx"] = version


def _graph(w: _Wire, pos: int, end: int, model: Model, scope: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise w.bad(f"subgraphs nested more than {MAX_DEPTH} deep")
    for num, wt, p, n in w.fields(pos, end):
        if num == 5 and wt == 2:
            _initializer(w, p, p + n, model, scope)
        elif num == 15 and wt == 2:
            _sparse(w, p, p + n, model, scope)
        elif num == 1 and wt == 2:
            _node(w, p, p + n, model, scope, depth)


def _function(w: _Wire, pos: int, end: int, model: Model) -> None:
    """A FunctionProto: the domain it defines is the model's own (a call to it runs these nodes, no
    native code), its nodes' domains are what a runtime must provide."""
    for num, wt, p, n in w.fields(pos, end):
        if num == 7 and wt == 2:
            _node(w, p, p + n, model, "", 0)
        elif num == 10 and wt == 2:
            model.functions.add(w.text(p, n))


def _node(w: _Wire, pos: int, end: int, model: Model, scope: str, depth: int) -> None:
    domain, name = "", ""
    for num, wt, p, n in w.fields(pos, end):
        if num == 7 and wt == 2:
            domain = w.text(p, n)
        elif num == 3 and wt == 2:
            name = w.text(p, n)
        elif num == 5 and wt == 2:  # an attribute: If/Loop/Scan bodies are graphs with initializers
            for anum, awt, ap, an in w.fields(p, p + n):
                if anum == 6 and awt == 2:
                    _graph(w, ap, ap + an, model, f"{scope}{name or 'node'}/", depth + 1)
                elif anum == 11 and awt == 2:
                    _graph(w, ap, ap + an, model, f"{scope}{name or 'node'}/", depth + 1)
    model.domains.add(domain or "ai.onnx")


def _ints(w: _Wire, wt: int, p: int, n: int, into: list[int]) -> None:
    """A repeated int64 field's values (one varint, or a packed run) appended to `into`."""
    if wt == 0:
        into.append(p)
    elif wt == 2:
        q = p
        while q < p + n:
            d, q = w.varint(q, p + n)
            into.append(d)


def _check_shape(w: _Wire, name: str, dims: list[int]) -> None:
    if any(d >= 1 << 62 for d in dims) or math.prod(dims) >= 1 << 60:  # past any file: only a hostile model
        raise w.bad(f"initializer {name!r} declares an impossible shape")


def _sparse(w: _Wire, pos: int, end: int, model: Model, scope: str) -> None:
    """A SparseTensorProto: listed with its dense shape, layout sparse_coo and the bytes of its values and
    indices (COO: indices [NNZ, rank] or linearised [NNZ]); its values are not read."""
    parts: dict[int, tuple[str, TensorInfo]] = {}
    dims: list[int] = []
    for num, wt, p, n in w.fields(pos, end):
        if num in (1, 2) and wt == 2:
            sub = Model()
            _initializer(w, p, p + n, sub, "")
            model.problems += sub.problems
            if sub.tensors:
                parts[num] = next(iter(sub.tensors.items()))
            model.unread += sub.unread
        elif num == 3:
            _ints(w, wt, p, n, dims)
    if 1 not in parts or 2 not in parts:
        return  # a string-typed sparse tensor: in `unread` already
    (name, values), (_, indices) = parts[1], parts[2]
    name = scope + name
    _check_shape(w, name, dims)
    nnz = values.shape[0] if len(values.shape) == 1 else -1
    if nnz < 0 or indices.shape not in ((nnz,), (nnz, len(dims))):
        raise w.bad(f"sparse initializer {name!r}: values {list(values.shape)} and indices {list(indices.shape)} "
                    f"do not describe a {list(dims)} tensor")
    model.tensors[name] = TensorInfo(dtype=values.dtype, shape=tuple(dims), layout=Layout.SPARSE_COO, source=w.path,
                                     stored_nbytes=values.nbytes + indices.nbytes, storage_key=name)
    model.sparse[name] = f"values {list(values.shape)}, indices {list(indices.shape)}"


def _initializer(w: _Wire, pos: int, end: int, model: Model, scope: str) -> None:
    dims: list[int] = []
    dtype_no, name, data, ext, location = 0, "", None, [], 0
    for num, wt, p, n in w.fields(pos, end):
        if num == 1:
            _ints(w, wt, p, n, dims)
        elif num == 2 and wt == 0:
            dtype_no = p
        elif num == 8 and wt == 2:
            name = w.text(p, n)
        elif (num == 9 or num in _IN_PLACE or num in VARINT_FIELDS) and wt == 2:
            data = (num, p, n)
        elif num == 13 and wt == 2:
            kv = {k: v for k, v in _pairs(w, p, p + n)}
            ext.append(kv)
        elif num == 14 and wt == 0:
            location = p
    name = scope + name
    _check_shape(w, name, dims)
    dtype = _DTYPES.get(dtype_no)
    if dtype is None:
        model.unread.append(name)
        return
    shape = tuple(dims)
    nbytes = math.prod(shape) * itemsize(dtype)
    source: str | None = w.path
    offset: int | None = None
    if location == 1:
        refs = {k: v for kv in ext for k, v in kv.items()}
        source, offset = _external(w.path, name, refs, nbytes, model)
    elif data is not None:
        offset = _stored(w, name, dtype_no, data, shape, nbytes, model)
    model.tensors[name] = TensorInfo(dtype=dtype, shape=shape, source=source, data_offset=offset,
                                     storage_nbytes=nbytes, storage_key=name)


def _stored(w: _Wire, name: str, dtype_no: int, data: tuple[int, int, int], shape: tuple[int, ...], nbytes: int,
            model: Model) -> int | None:
    """The in-place offset of an initializer's values (raw_data, packed float/double), or None: values
    packed as varints are recorded for onnxvalues to decode (1 to 10 bytes each: checked here)."""
    num, pos, n = data
    if num == 9 or dtype_no in _IN_PLACE.get(num, ()):
        if n != nbytes:
            raise w.bad(f"initializer {name!r} holds {n} bytes, its {list(shape)} x {_DTYPES[dtype_no]} needs {nbytes}")
        return pos
    count = math.prod(shape)
    if num in VARINT_FIELDS and not count <= n <= 10 * count:
        raise w.bad(f"initializer {name!r} holds {n} bytes of varints, its {list(shape)} needs {count} values")
    if num in VARINT_FIELDS:
        model.packed[name] = Packed(w.path, pos, n)
    return None


def _pairs(w: _Wire, pos: int, end: int) -> Iterator[tuple[str, str]]:
    key = value = ""
    for num, wt, p, n in w.fields(pos, end):
        if num == 1 and wt == 2:
            key = w.text(p, n)
        elif num == 2 and wt == 2:
            value = w.text(p, n)
    yield key, value


def _external(path: str, name: str, refs: dict[str, str], nbytes: int, model: Model) -> tuple[str | None, int | None]:
    """The checked file and offset of an external reference; a finding (and no source) otherwise."""
    loc = refs.get("location", "")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        offset, length = int(refs.get("offset", "0")), int(refs.get("length", str(nbytes)))
    except ValueError:
        model.problems.append(f"initializer {name!r}: external data offset/length are not numbers")
        return None, None
    parts = loc.replace("\\", "/").split("/")
    if not loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        model.problems.append(f"initializer {name!r}: external data location {loc!r} is outside the model's folder")
        return None, None
    if is_remote(path):  # the model's folder is not a local one: nothing to check a link or a size against
        raise BadInput(path, f"initializer {name!r}: external data {loc!r} of a remote model is not read; "
                             "download the model with its data files and inspect the local copy")
    target = os.path.join(folder, *parts)
    real = os.path.realpath(target)
    if os.path.commonpath([real, os.path.realpath(folder)]) != os.path.realpath(folder):
        model.problems.append(f"initializer {name!r}: external data {loc!r} links outside the model's folder")
        return None, None
    try:
        st = os.stat(real)
    except OSError:
        raise BadInput(path, f"initializer {name!r}: external data file {loc!r} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        model.problems.append(f"initializer {name!r}: external data {loc!r} is not a regular file")
        return None, None
    if offset < 0 or length != nbytes or offset + length > st.st_size:
        model.problems.append(f"initializer {name!r}: external data range {offset}+{length} of {loc!r} does not "
                              f"hold its {nbytes} bytes ({st.st_size}-byte file)")
        return None, None
    return real, offset


def read(path: str) -> RawCheckpoint:
    model = read_model(path)
    if model.problems:
        raise UnsafeContent(path, model.problems[0], HINT)
    raw = RawCheckpoint(path=path, format=Format.ONNX, root=dict(model.tensors), files=[path])
    raw.kinds = {n: (Kind.INITIALIZER, Evidence(Source.ONNX)) for n in model.tensors}
    raw.metadata = {"opsets": ", ".join(f"{d} {v}" for d, v in sorted(model.opsets.items())),
                    "op domains": ", ".join(sorted(model.domains))}
    if model.sparse:
        raw.metadata["sparse initializers"] = "; ".join(f"{n}: {v}" for n, v in model.sparse.items())
    if model.unread:
        raw.warnings.append(f"{len(model.unread)} initializer(s) of a type statecli does not read (strings, 4-bit): "
                            + ", ".join(model.unread[:3]))
    return raw


def scan(path: str, acc: Findings) -> None:
    model = read_model(path)
    acc.problems += model.problems
    # Every op domain is listed (the standard ones as safe, with their opset): what a runtime must provide.
    for d in sorted(model.domains | set(model.opsets)):
        opset = f" (opset {model.opsets[d]})" if d in model.opsets else ""
        if d in model.functions:
            acc.globals.append(GlobalRef(f"local function domain: {d}{opset}", "functions", "domain", Verdict.SAFE))
        elif d in STANDARD_DOMAINS:
            acc.globals.append(GlobalRef(f"op domain: {d}{opset}", "graph", "domain", Verdict.SAFE))
        else:
            acc.globals.append(GlobalRef(f"custom op domain: {d}{opset}", "graph", "domain", Verdict.NEEDS_TRUST,
                                         "a runtime loads code that implements this domain's operators"))


def _looks_like_onnx(head: bytes) -> bool:
    """ir_version (field 1, a small varint) first, then a ModelProto field: what every exporter writes."""
    return (len(head) > 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] & 7 in (0, 2)
            and head[2] >> 3 in (2, 3, 4, 5, 6, 7, 8, 14, 20, 25))


class OnnxHandler(BaseHandler):
    """ONNX models (read-only)."""

    format = Format.ONNX

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return _looks_like_onnx(head)

    def read(self, source: str) -> RawCheckpoint:
        return read(source)

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        scan(source, findings)
        return Format.ONNX

    def values(self, ck: Checkpoint) -> AbstractContextManager[ValueReader]:
        from .onnxvalues import onnx_reader

        return onnx_reader(ck, read_model(ck.path).packed)


HANDLER = OnnxHandler()
