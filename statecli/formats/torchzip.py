"""torch.save zip archives: container checks, then data.pkl through the no-execution unpickler."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from ..errors import BadInput, UnsafeContent
from ..units import itemsize
from ._common import RawCheckpoint
from .pickles import Findings, scan_stream
from .unpickler import MAX_PICKLE_BYTES, StorageRef, storage_from_pid, unpickle
from .zipcheck import MAGIC, Archive

FORMAT = "torch zip"
REFUSE_HINT = "refusing the file; do not torch.load it (statecli scan lists every finding)"


def detect(head: bytes) -> bool:
    return head.startswith(MAGIC)


def read(path: str, trusted_prefixes: tuple[str, ...] = ()) -> RawCheckpoint:
    arc = Archive(path)
    try:
        return _read(arc, trusted_prefixes)
    finally:
        arc.close()


def _read(arc: Archive, trusted_prefixes: tuple[str, ...]) -> RawCheckpoint:
    path, prefix = arc.path, arc.prefix
    pkl_name = prefix + "data.pkl"
    if pkl_name not in arc.infos:
        if arc.problems:
            raise UnsafeContent(path, arc.problems[0], REFUSE_HINT)
        raise BadInput(path, "zip archive has no data.pkl: not a torch.save file")
    if arc.infos[pkl_name].file_size > MAX_PICKLE_BYTES:
        # Past every scanner's size cap: a place to hide a payload, not a real checkpoint.
        raise UnsafeContent(path, f"data.pkl declares {arc.infos[pkl_name].file_size} bytes, over the "
                                  f"{MAX_PICKLE_BYTES}-byte pickle cap", REFUSE_HINT)
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

    data = arc.member(pkl_name)
    if arc.problems:
        raise UnsafeContent(path, arc.problems[0], REFUSE_HINT)
    stream = io.BytesIO(data)
    try:
        root, up = unpickle(stream, resolve, path, "data.pkl pickle", trusted_prefixes, arc.torchscript)
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
    fmt = "torchscript zip" if arc.torchscript else FORMAT
    raw = RawCheckpoint(path=path, format=fmt, root=root, files=[path], byteorder=byteorder,
                        globals_seen=up.globals_seen, untrusted=up.untrusted, dangerous=up.dangerous)
    for key in storages:
        raw.storages[key] = (path, arc.offsets[f"{prefix}data/{key}"])
    if arc.torchscript:
        raw.warnings.append("a TorchScript archive (torch.jit.save): torch.jit.load would run its compiled code; "
                            "statecli read its parameters and buffers as data (classes declared in code/)")
    if byteorder != "little":
        raw.warnings.append("tensors were saved big-endian; values read by statecli are byte-swapped by torch")
    return raw


def trailing_findings(data: bytes, end: int, where: str, acc: Findings, torchscript: bool = False) -> None:
    """Bytes after data.pkl's STOP: torch never reads them, other loaders may; scanned, and a finding."""
    from .pickles import Context

    if end >= len(data):
        return
    before = acc.pickles
    stop = scan_stream(data, f"{where} after STOP", acc, Context(torchscript=torchscript), start=end)
    extra = acc.pickles - before
    what = f" ({extra} more pickle(s))" if extra else ""
    acc.problems.append(f"{where}: {len(data) - end} byte(s) after the pickle's STOP{what}"
                        + (f", {len(data) - stop} of them not a pickle" if stop < len(data) else ""))


def _refuse_findings(arc: Archive, keys: set[str] | None, data: bytes, end: int) -> None:
    """The reader refuses what `scan` reports: members torch never reads, bytes after STOP. With
    `keys` None (data.pkl could not be read) storage records are not judged."""
    acc = Findings()
    trailing_findings(data, end, arc.prefix + "data.pkl", acc, arc.torchscript)
    scan_stream(arc.tail_bytes(), "after the zip end record", acc)
    extra = [n for n in arc.unexpected(keys or set()) if keys is not None or not n.startswith(arc.prefix + "data/")]
    problems = acc.problems + [f"zip member {n!r} is never read by torch.load" for n in extra]
    if acc.dangerous:
        problems.insert(0, "pickle references code that loading would run: " + ", ".join(acc.dangerous))
    if problems:
        raise UnsafeContent(arc.path, problems[0], REFUSE_HINT)
