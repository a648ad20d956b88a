"""What every format reader shares: the raw result type and safe opening of untrusted paths."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import BadInput
from ..pickle.unpickler import TensorRef
from ..state import Evidence, Format, Kind, Role, TensorInfo
from ..vocab import Layout


@dataclass
class RawCheckpoint:
    """A reader's output: the object tree as saved (tensors as TensorInfo/TensorRef leaves)."""

    path: str
    format: Format
    root: Any
    files: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    # storage key -> (source file, absolute byte offset of the storage's first byte, byte order)
    storages: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    globals_seen: list[str] = field(default_factory=list)
    untrusted: list[str] = field(default_factory=list)
    dangerous: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    byteorder: str = "little"
    # Kinds the file itself records (a torch.export graph signature; GGUF: a runtime's weights), by the
    # entry's dotted path from the root: load.py uses them instead of inferring.
    kinds: dict[str, tuple[Kind, Evidence]] = field(default_factory=dict)
    # What a top-level container holds when the format says so (a .pt2's constants), by its key: load.py
    # uses it instead of guessing from the container's name.
    roles: dict[str, Role] = field(default_factory=dict)

    def tensor_info(self, ref: TensorRef | TensorInfo) -> TensorInfo:
        """Turn a pickled tensor record into a TensorInfo that knows where its bytes are."""
        if isinstance(ref, TensorInfo):
            return ref
        storage = ref.storage
        if storage is not None:
            skey = storage.key
            source, offset = self.storages.get(skey) or (self.path, None)
            storage_nbytes, storage_dtype = storage.nbytes, storage.dtype
        else:
            source, offset, skey, storage_nbytes, storage_dtype = self.path, None, None, None, None
        stored = None
        if ref.components and ref.layout not in (Layout.STRIDED, Layout.QUANTIZED):
            stored = sum(self.tensor_info(c).nbytes for c in ref.components)
        return TensorInfo(dtype=ref.dtype, shape=ref.shape, device=ref.location, layout=ref.layout, stride=ref.stride,
                          storage_offset=ref.storage_offset, storage_key=skey, storage_nbytes=storage_nbytes,
                          storage_dtype=storage_dtype, source=source, data_offset=offset,
                          requires_grad=ref.requires_grad, is_parameter_object=ref.is_parameter,
                          stored_nbytes=stored, subclass=ref.subclass)


def open_regular(path: str) -> BinaryIO:
    """Open an untrusted path for reading, refusing anything but a regular file (a FIFO or a
    device would block or never end). A URL opens as a remote file read by bounded ranges."""
    from ..io.sourcefile import open_file

    return open_file(path)


def read_exact(f: BinaryIO, offset: int, n: int, path: str, what: str) -> bytes:
    if offset < 0 or n < 0:
        raise BadInput(path, f"corrupt file: {what} at impossible offset {offset}")
    # pread reads exactly these bytes: a buffered read would pull 4 KiB of tensor data per header.
    try:
        data = os.pread(f.fileno(), n, offset)
    except (AttributeError, OSError, ValueError):
        f.seek(offset)
        data = f.read(n)
    if len(data) != n:
        raise BadInput(path, f"truncated file: {what} at byte {offset} needs {n} bytes, found {len(data)}")
    return data
