"""torch.save zip archives, both directions. Reading: container checks, then data.pkl through the
no-execution unpickler. Writing: a streaming, aligned zip writer and a pickler that writes a tree of
output records exactly as torch.save pickles tensors, without importing torch (globals by name)."""

from __future__ import annotations

import io
import pickle
import struct
import uuid
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from ..errors import BadInput, NotACheckpoint, UnsafeContent
from ..io import zipheaders
from ..io.urls import is_remote
from ..pickle.pickles import Findings, scan_stream
from ..pickle.unpickler import MAX_PICKLE_BYTES, StorageRef, storage_from_pid, unpickle
from ..pickle.verdict import LAYOUTS
from ..state import Format
from ..units import itemsize
from ._common import RawCheckpoint
from .handler import BaseHandler
from .zipcheck import MAGIC, Archive
from .zipscan import trailing_findings

REFUSE_HINT = "refusing the file; do not torch.load it (statecli scan lists every finding)"


def detect(head: bytes) -> bool:
    return head.startswith(MAGIC)


def read(path: str, trusted: frozenset[str] = frozenset()) -> RawCheckpoint:
    arc = Archive(path, lazy=is_remote(path))  # remote: a handful of requests (io/zipheaders.py)
    try:
        return _read(arc, trusted)
    finally:
        arc.close()


def _read(arc: Archive, trusted: frozenset[str]) -> RawCheckpoint:
    path, prefix = arc.path, arc.prefix
    pkl_name = arc.lookup("data.pkl") or prefix + "data.pkl"
    if pkl_name not in arc.infos:
        if arc.problems:
            raise UnsafeContent(path, arc.problems[0], REFUSE_HINT)
        raise BadInput(path, "zip archive has no data.pkl: not a torch.save file")
    if arc.infos[pkl_name].file_size > MAX_PICKLE_BYTES:
        # Past every scanner's size cap: a place to hide a payload, not a real checkpoint.
        raise UnsafeContent(path, f"data.pkl declares {arc.infos[pkl_name].file_size} bytes, over the "
                                  f"{MAX_PICKLE_BYTES}-byte pickle cap", REFUSE_HINT)
    byteorder = "little"
    byteorder_name = arc.lookup("byteorder")
    if byteorder_name is not None:
        byteorder = arc.member(byteorder_name).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise BadInput(path, f"unknown byteorder record {byteorder!r}")
    storages: dict[str, StorageRef] = {}
    resolve = _resolver(arc, storages)
    data = arc.member(pkl_name)
    if arc.problems:
        raise UnsafeContent(path, arc.problems[0], REFUSE_HINT)
    stream = io.BytesIO(data)
    try:
        root, up = unpickle(stream, resolve, path, "data.pkl pickle", trusted, arc.torchscript)
    except BadInput:
        _refuse_findings(arc, None, data, len(data))
        raise
    if up.dangerous:
        raise UnsafeContent(path, "pickle references code that loading would run: " + ", ".join(up.dangerous),
                            REFUSE_HINT)
    _refuse_findings(arc, set(storages), data, stream.tell())
    if arc.torchscript:
        from .torchscript import as_modules

        root = as_modules(arc, root)
    fmt = Format.TORCHSCRIPT_ZIP if arc.torchscript else Format.TORCH_ZIP
    raw = RawCheckpoint(path=path, format=fmt, root=root, files=[path], byteorder=byteorder,
                        globals_seen=up.globals_seen, untrusted=up.untrusted, dangerous=up.dangerous)
    alignment = _alignment(arc) if arc.lazy else 0
    for key in storages:
        member = arc.lookup(f"data/{key}") or f"{prefix}data/{key}"
        raw.storages[key] = (path, _data_start(arc, member, alignment))
    if arc.torchscript:
        raw.warnings.append("a TorchScript archive (torch.jit.save): torch.jit.load would run its compiled code; "
                            "statecli read its parameters and buffers as data (classes declared in code/)")
    if byteorder != "little":
        raw.warnings.append("tensors were saved big-endian; values read by statecli are byte-swapped by torch")
    return raw


def _data_start(arc: Archive, member: str, alignment: int) -> int:
    """Where a storage's bytes start: from its local header, or (a lazy remote read) where torch.save puts
    them, to be checked against the local header before its values are read (io/zipheaders.py)."""
    if not arc.lazy:
        return arc.start(member)
    info = arc.infos[member]
    at = zipheaders.aligned_start(info.header_offset, member.encode(), info.file_size, alignment)
    zipheaders.expect(arc.path, at, info.header_offset, member)
    return at


def _alignment(arc: Archive) -> int:
    """torch.save's data alignment: 64 bytes, recorded in .storage_alignment since torch 2.5."""
    name = arc.lookup(".storage_alignment")
    text = arc.member(name).decode("ascii", "replace").strip() if name else "64"
    return int(text) if text.isdigit() and 0 < int(text) <= 1 << 20 else 64


def _resolver(arc: Archive, storages: dict[str, StorageRef]) -> Callable[[Any], StorageRef]:
    """data.pkl's persistent_load: each storage record checked against its zip member (stored, exactly
    numel x itemsize bytes), read nothing; the records seen go into `storages`."""
    path, prefix = arc.path, arc.prefix

    def resolve(pid: Any) -> StorageRef:
        stype, key, location, numel, _ = storage_from_pid(pid)
        seen = storages.get(key)
        if seen is not None:
            return seen
        member = arc.lookup(f"data/{key}") or f"{prefix}data/{key}"
        info = arc.infos.get(member)
        if info is None:
            raise BadInput(path, f"data.pkl names storage {key!r} but the archive has no member {member!r}")
        if info.compress_type != zipfile.ZIP_STORED:
            raise BadInput(path, f"storage member {member!r} is compressed; torch.save stores them uncompressed")
        want = numel * itemsize(stype.dtype)
        if info.file_size != want or info.compress_size != want:
            raise BadInput(
                path,
                f"storage {key!r} declares {numel} x {stype.dtype} ({want} bytes) but its zip member holds "
                f"{info.file_size} bytes",
            )
        ref = StorageRef(key, stype.dtype, location, numel, stype.typed)
        storages[key] = ref
        return ref

    return resolve


def _refuse_findings(arc: Archive, keys: set[str] | None, data: bytes, end: int) -> None:
    """The reader refuses what `scan` reports: members torch never reads, bytes after STOP. With
    `keys` None (data.pkl could not be read) storage records are not judged."""
    from ..pickle.pickles import Context

    acc = Findings()
    trailing_findings(data, end, arc.lookup("data.pkl") or arc.prefix + "data.pkl", acc, arc.torchscript)
    for name in arc.side_pickles():
        if arc.infos[name].file_size <= MAX_PICKLE_BYTES:
            scan_stream(arc.member(name), name, acc, Context(torchscript=True))
    scan_stream(arc.tail_bytes(), "after the zip end record", acc)
    extra = [n for n in arc.unexpected(keys or set()) if keys is not None or not n.startswith(arc.prefix + "data/")]
    problems = acc.problems + [f"zip member {n!r} is never read by torch.load" for n in extra]
    if acc.dangerous:
        problems.insert(0, "pickle references code that loading would run: " + ", ".join(acc.dangerous))
    if problems:
        raise UnsafeContent(arc.path, problems[0], REFUSE_HINT)


# -- write side (driven by statecli.rewrite) -------------------------------------------------------

ALIGN = 64  # torch aligns every data/ record to 64 bytes (.storage_alignment)
_STORAGE_CLASS = {"float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
                  "bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
                  "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
                  "complex128": "ComplexDoubleStorage", "complex64": "ComplexFloatStorage"}

Chunks = Iterable[bytes | memoryview]


@dataclass(frozen=True, eq=False)
class OutStorage:
    """One data/<key> record of the output: `numel` elements of `dtype`, saved as on `location`."""

    key: str
    dtype: str
    location: str
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)


@dataclass(frozen=True, eq=False)
class OutTensor:
    """A tensor leaf of the tree to pickle: a view of an OutStorage. Pickles as torch.save pickles a tensor."""

    storage: OutStorage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    requires_grad: bool = False

    def __reduce_ex__(self, protocol: Any) -> Any:
        args: tuple[Any, ...] = (self.storage, self.offset, tuple(self.shape), tuple(self.stride),
                                 self.requires_grad, OrderedDict())
        if self.storage.dtype in _STORAGE_CLASS:
            return torch_global("torch._utils", "_rebuild_tensor_v2"), args
        return torch_global("torch._utils", "_rebuild_tensor_v3"), args + (torch_global("torch", self.storage.dtype),)


@dataclass(frozen=True, eq=False)
class TorchGlobal:
    """A torch object known by name (a dtype, layout, storage class, rebuild function): pickled as
    the GLOBAL opcode torch.save writes for it, so writing a .pt never imports torch. One instance
    per name (torch_global), so the pickle memoizes it as torch.save memoizes the real object."""

    module: str
    name: str

    def __call__(self, *args: Any) -> Any:  # pickle's save_reduce wants a callable; never called here
        raise TypeError(f"{self.module}.{self.name} is a stand-in for pickling")

    def resolve(self) -> Any:
        """The real object (imports torch): for writers that are torch's own (DCP)."""
        import importlib

        return getattr(importlib.import_module(self.module), self.name)


@dataclass(frozen=True, eq=False)
class TorchLayout:
    """torch.strided and the other layouts: torch pickles them as torch.serialization._get_layout(name)."""

    name: str

    def __reduce_ex__(self, protocol: Any) -> Any:
        return torch_global("torch.serialization", "_get_layout"), (f"torch.{self.name}",)

    def resolve(self) -> Any:
        import torch

        return getattr(torch, self.name)


_GLOBALS: dict[tuple[str, str], Any] = {}


def torch_global(module: str, name: str) -> TorchGlobal:
    g = _GLOBALS.get((module, name))
    if g is None:
        g = _GLOBALS[(module, name)] = TorchGlobal(module, name)
    return g


def torch_value(name: str) -> TorchGlobal | TorchLayout:
    """The stand-in for `torch.<name>` (a dtype, layout, qscheme or memory format) that pickles as torch
    pickles the real object."""
    if name in LAYOUTS:
        layout = _GLOBALS.get(("layout", name))
        if layout is None:
            layout = _GLOBALS[("layout", name)] = TorchLayout(name)
        return layout
    return torch_global("torch", name)


_PyPickler: Any = pickle._Pickler  # the pure-Python pickler: its dispatch table is open


class _Pickler(_PyPickler):  # type: ignore[misc]  # pickle._Pickler is private, so untyped: Any
    """Python's own pickler (its save_global would import torch to check a name): TorchGlobal
    stand-ins are written as GLOBAL opcodes directly, everything else as pickle writes it."""

    dispatch = dict(_PyPickler.dispatch)

    def save_torch_global(self, obj: TorchGlobal) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[TorchGlobal] = save_torch_global

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, OutStorage):
            if obj.dtype in _STORAGE_CLASS:
                return ("storage", torch_global("torch", _STORAGE_CLASS[obj.dtype]), obj.key, obj.location, obj.numel)
            return ("storage", torch_global("torch.storage", "UntypedStorage"), obj.key, obj.location, obj.nbytes)
        return None


def write(f: IO[bytes], tree: Any, storages: Sequence[OutStorage], data: Callable[[OutStorage], Chunks]) -> None:
    """Write a torch.save-compatible archive: `tree` (plain values, containers and OutTensor leaves)
    as data.pkl, then each storage's bytes, pulled one storage at a time from `data(storage)`."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(tree)
    zw = ZipWriter(f)
    zw.write("archive/data.pkl", buf.getvalue(), len(buf.getvalue()))
    zw.write("archive/.format_version", b"1", 1)
    zw.write("archive/.storage_alignment", b"64", 2)
    zw.write("archive/byteorder", b"little", 6)
    for st in storages:
        zw.write(f"archive/data/{st.key}", data(st), st.nbytes)
    zw.write("archive/version", b"3\n", 2)
    sid = str(uuid.uuid4().int).encode()[:40].ljust(40, b"0")
    zw.write("archive/.data/serialization_id", sid, len(sid))
    zw.close()


class ZipWriter:
    """A minimal streaming, 64-byte-aligned, zip64-capable STORED zip writer in torch's layout."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.entries: list[tuple[bytes, int, int, int]] = []  # name, crc, size, header offset

    def _local_header(self, name: bytes, size: int, offset: int) -> bytes:
        zip64 = size >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, size, size) if zip64 else b""
        base = 30 + len(name) + len(extra)
        pad = (-(offset + base + 4)) % ALIGN  # a padding field (id 'FB', as torch writes) aligns the data
        extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        sz = 0xFFFFFFFF if zip64 else size
        return struct.pack("<4s5H3L2H", b"PK\x03\x04", 45 if zip64 else 20, 0x800, 0, 0, 0, 0, sz, sz,
                           len(name), len(extra)) + name + extra

    def write(self, name: str, chunks: Chunks | bytes, size: int) -> None:
        bname = name.encode("utf-8")
        offset = self.f.tell()
        header = self._local_header(bname, size, offset)
        self.f.write(header)
        crc, written = 0, 0
        known = getattr(chunks, "crc32", None)  # a source that checksums its chunks on other threads
        for chunk in ([chunks] if isinstance(chunks, bytes) else chunks):
            if known is None:
                crc = zlib.crc32(chunk, crc)
            written += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            self.f.write(chunk)
        if written != size:
            raise RuntimeError(f"{name}: wrote {written} bytes, expected {size}")
        if known is not None:
            crc = known()
        end = self.f.tell()
        self.f.seek(offset + 14)
        self.f.write(struct.pack("<L", crc))
        self.f.seek(end)
        self.entries.append((bname, crc, size, offset))

    def close(self) -> None:
        cd_start = self.f.tell()
        for name, crc, size, offset in self.entries:
            need64 = size >= 0xFFFFFFFF or offset >= 0xFFFFFFFF
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset) if need64 else b""
            sz = 0xFFFFFFFF if need64 else size
            off = 0xFFFFFFFF if need64 else offset
            self.f.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45 if need64 else 20, 45 if need64 else 20,
                                     0x800, 0, 0, 0, crc, sz, sz, len(name), len(extra), 0, 0, 0, 0, off)
                         + name + extra)
        cd_end = self.f.tell()
        n, cd_size = len(self.entries), cd_end - cd_start
        if n >= 0xFFFF or cd_start >= 0xFFFFFFFF or cd_size >= 0xFFFFFFFF:
            self.f.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_start))
            self.f.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, cd_end, 1))
            self.f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
        else:
            self.f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, cd_size, cd_start, 0))


class TorchZipHandler(BaseHandler):
    """torch.save zip archives (TorchScript archives too: read as data); a zip with no data.pkl is
    refused, after its .npy members are checked for a payload (an .npz np.load would unpickle)."""

    format = Format.TORCH_ZIP
    writer = staticmethod(write)

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return detect(head)

    def read(self, source: str) -> RawCheckpoint:
        try:
            return read(source)
        except NotACheckpoint:
            from .npy import refuse_payload

            refuse_payload(source, zipped=True)
            raise

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        from .zipscan import scan

        return scan(source, findings, verify_crc)


HANDLER = TorchZipHandler()
