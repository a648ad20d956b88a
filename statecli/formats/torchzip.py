"""torch.save zip archives: container checks, then data.pkl through the no-execution unpickler."""

from __future__ import annotations

import struct
import zipfile
from typing import Any

from ..errors import BadInput
from ..units import itemsize
from ._common import RawCheckpoint, open_regular, read_exact
from .unpickler import MAX_PICKLE_BYTES, StorageRef, storage_from_pid, unpickle

FORMAT = "torch zip"
MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


def detect(head: bytes) -> bool:
    return head.startswith(MAGIC)


class _Archive:
    """The zip central directory, checked member by member against the local headers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.f = open_regular(path)
        try:
            self.zf = zipfile.ZipFile(self.f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            self.f.close()
            raise BadInput(path, f"corrupt zip archive: {exc}") from exc
        try:
            self._check()
        except BaseException:
            self.close()
            raise

    def _check(self) -> None:
        infos = self.zf.infolist()
        if not infos:
            raise BadInput(self.path, "empty zip archive: not a torch.save file")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})[0]
            raise BadInput(self.path, f"zip archive has duplicate member {dup!r}; refusing an ambiguous file")
        prefixes = {n.split("/", 1)[0] for n in names}
        if len(prefixes) != 1 or any("/" not in n for n in names):
            raise BadInput(self.path, "zip members are not under one archive folder: not a torch.save file")
        self.prefix = prefixes.pop() + "/"
        size = self.f.seek(0, 2)
        self.offsets: dict[str, int] = {}
        for info in infos:
            if info.flag_bits & 0x1:
                raise BadInput(self.path, f"zip member {info.filename!r} is encrypted")
            raw = read_exact(self.f, info.header_offset, _LOCAL_HEADER.size, self.path, "zip local header")
            fields = _LOCAL_HEADER.unpack(raw)
            if fields[0] != MAGIC:
                raise BadInput(self.path, f"zip local header of {info.filename!r} is missing")
            name_len, extra_len = fields[9], fields[10]
            local_name = read_exact(self.f, info.header_offset + _LOCAL_HEADER.size, name_len, self.path, "zip name")
            if local_name.decode("utf-8", "replace") != info.filename:
                raise BadInput(
                    self.path,
                    f"zip local header names {local_name!r} but the central directory names {info.filename!r}",
                )
            start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            if start + info.compress_size > size:
                raise BadInput(self.path, f"truncated file: zip member {info.filename!r} runs past the end")
            self.offsets[info.filename] = start
        self.infos = {i.filename: i for i in infos}

    def member(self, name: str) -> bytes:
        try:
            return self.zf.read(name)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise BadInput(self.path, f"cannot read zip member {name!r}: {exc}") from exc

    def close(self) -> None:
        self.zf.close()
        self.f.close()


def read(path: str, trusted_prefixes: tuple[str, ...] = ()) -> RawCheckpoint:
    arc = _Archive(path)
    try:
        return _read(arc, trusted_prefixes)
    finally:
        arc.close()


def _read(arc: _Archive, trusted_prefixes: tuple[str, ...]) -> RawCheckpoint:
    path, prefix = arc.path, arc.prefix
    pkl_name = prefix + "data.pkl"
    if pkl_name not in arc.infos:
        raise BadInput(path, "zip archive has no data.pkl: not a torch.save file")
    if arc.infos[pkl_name].file_size > MAX_PICKLE_BYTES:
        raise BadInput(path, f"data.pkl declares {arc.infos[pkl_name].file_size} bytes, over the pickle size cap")
    byteorder = "little"
    if prefix + "byteorder" in arc.infos:
        byteorder = arc.member(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise BadInput(path, f"unknown byteorder record {byteorder!r}")
    storages: dict[str, StorageRef] = {}

    def resolve(pid: Any) -> StorageRef:
        stype, key, location, numel, _ = storage_from_pid(pid)
        seen = storages.get(key)
        if seen is not None:
            return seen
        member = f"{prefix}data/{key}"
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

    root, up = unpickle(arc.member(pkl_name), resolve, path, "data.pkl pickle", trusted_prefixes)
    fmt = FORMAT
    if prefix + "constants.pkl" in arc.infos or any(n.startswith(prefix + "code/") for n in arc.infos):
        fmt = "torchscript zip"
    raw = RawCheckpoint(path=path, format=fmt, root=root, files=[path], byteorder=byteorder,
                        globals_seen=up.globals_seen, untrusted=up.untrusted, dangerous=up.dangerous)
    for key in storages:
        raw.storages[key] = (path, arc.offsets[f"{prefix}data/{key}"])
    if byteorder != "little":
        raw.warnings.append("tensors were saved big-endian; values read by statecli are byte-swapped by torch")
    return raw
