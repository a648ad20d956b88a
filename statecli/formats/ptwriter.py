"""The write side of torch.save zip archives (the read side is torchzip.py): a streaming, aligned zip
writer and a pickler that writes a tree of output records exactly as torch.save pickles tensors,
without importing torch (its globals are written by name)."""

from __future__ import annotations

import io
import pickle
import struct
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from ..units import itemsize
from .verdict import LAYOUTS

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
        return layout  # type: ignore[no-any-return]
    return torch_global("torch", name)


_PyPickler: Any = pickle._Pickler  # type: ignore[attr-defined]  # the pure-Python pickler: its dispatch table is open


class _Pickler(_PyPickler):
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
        for chunk in ([chunks] if isinstance(chunks, bytes) else chunks):
            crc = zlib.crc32(chunk, crc)
            written += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            self.f.write(chunk)
        if written != size:
            raise RuntimeError(f"{name}: wrote {written} bytes, expected {size}")
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
