"""Pre-1.6 torch.save files: five pickles (magic, protocol, sys_info, object, storage keys) followed
by each storage's raw bytes, every one prefixed with its element count."""

from __future__ import annotations

import pickletools
import struct
from typing import Any, BinaryIO

from ..errors import BadInput, NotACheckpoint, UnsafeContent
from ..pickle.pickles import Findings
from ..pickle.unpickler import StorageRef, storage_from_pid, unpickle
from ..state import Format
from ..units import itemsize
from ._common import RawCheckpoint, open_regular, read_exact
from .handler import BaseHandler

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


def _no_pid(pid: Any) -> Any:
    raise BadInput(None, "unexpected persistent id in a legacy header pickle")


# Every opcode byte: pickle.load, and torch.load of a file that is neither zip nor tar, run a stream
# from whatever opcode it starts with (`N0cos\nsystem...`, `I7\n0...`, a protocol 0/1 legacy save's
# `L...`), so a file starting with one is read as a pickle; the reader says what it looks like when
# no pickle is there (formats.refusal).
PICKLE_OPCODES = frozenset(op.code.encode("latin-1") for op in pickletools.opcodes)


def detect(head: bytes) -> bool:
    """A pickle stream (a legacy file starts with the pickled magic number, a bare pickle with any
    opcode): `read` decides, through the restricted unpickler, whether it is a legacy torch file."""
    return head[:1] in PICKLE_OPCODES


def _refuse_dangerous(path: str, up: Any) -> None:
    if up.dangerous:
        raise UnsafeContent(path, "pickle references code that loading would run: " + ", ".join(up.dangerous),
                            "refusing the file; do not torch.load it")


MAX_TAIL = 64 << 20


def read(path: str) -> RawCheckpoint:
    raw, end, size = _read(path, refuse=True)
    if end < size:
        _refuse_tail(path, end, size)
    return raw


def storages_end(path: str) -> tuple[int, int]:
    """(offset just past the last storage, file size) of a legacy file whose header pickles `scan`
    has already judged: the bytes after it are what `scan` must still account for."""
    _, end, size = _read(path, refuse=False)
    return end, size


def tail_findings(path: str, end: int, size: int, acc: Findings) -> None:
    """Bytes after a legacy file's storages: torch.load never reads them; another loader calling
    pickle.load again would. Scanned (the first MAX_TAIL bytes) and reported."""
    from ..pickle.pickles import scan_stream

    with open_regular(path) as f:
        tail = read_exact(f, end, min(size - end, MAX_TAIL), path, "bytes after the storages")
    before = acc.pickles
    scan_stream(tail, "after the storages", acc)
    extra = acc.pickles - before
    acc.problems.append(f"{size - end} byte(s) after the last storage" + (f" ({extra} pickle(s))" if extra else ""))


def _refuse_tail(path: str, end: int, size: int) -> None:
    acc = Findings()
    tail_findings(path, end, size, acc)
    if acc.dangerous:
        raise UnsafeContent(path, "pickle after the storages references code that loading would run: "
                            + ", ".join(acc.dangerous), "refusing the file; do not load it")
    raise UnsafeContent(path, acc.problems[-1], "refusing the file (statecli scan lists every finding)")


def _refuse_stream(path: str) -> None:
    """A bare pickle is not a checkpoint, but a payload in any pickle of its stream is a finding."""
    from ..pickle.pickles import scan_stream

    with open_regular(path) as f:
        data = f.read(MAX_TAIL)
    acc = Findings()
    scan_stream(data, "pickle", acc)
    if acc.dangerous:
        raise UnsafeContent(path, "pickle references code that loading would run: " + ", ".join(acc.dangerous),
                            "refusing the file; do not torch.load it")
    if not acc.globals and not acc.problems and acc.errors and data[:1] != b"\x80":
        from . import refusal

        raise refusal(path, data[:512])  # no pickle there (a text file, an image): say what it looks like


def _read(path: str, refuse: bool) -> tuple[RawCheckpoint, int, int]:
    with open_regular(path) as f:
        size = f.seek(0, 2)
        f.seek(0)
        try:
            magic, up_magic = unpickle(f, _no_pid, path, "first pickle")
        except BadInput:
            _refuse_stream(path)
            raise
        if magic != MAGIC_NUMBER:
            _refuse_dangerous(path, up_magic)
            _refuse_stream(path)
            raise NotACheckpoint(path, "not a checkpoint: a bare pickle, not a torch.save file; statecli does not read "
                                 "arbitrary pickles")
        proto, up_proto = unpickle(f, _no_pid, path, "legacy header")
        if proto != PROTOCOL_VERSION:
            raise BadInput(path, f"legacy torch file has protocol version {proto!r}, expected {PROTOCOL_VERSION}")
        sys_info, up_info = unpickle(f, _no_pid, path, "legacy sys_info")
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)

        roots: dict[str, StorageRef] = {}
        views: dict[str, tuple[str, int]] = {}

        def resolve(pid: Any) -> Any:
            if isinstance(pid, tuple) and pid and pid[0] == "module":
                return pid[1] if len(pid) > 1 else None  # source record of a pickled module class
            stype, key, location, numel, view = storage_from_pid(pid)
            root = roots.get(key)
            if root is None:
                root = StorageRef(key, stype.dtype, location, numel, True)
                roots[key] = root
            if view is None:
                return root
            if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, (int, str)) for v in view)):
                raise BadInput(path, f"malformed storage view record {view!r:.80}")
            view_key, offset, view_size = view
            if offset < 0 or view_size < 0 or offset + view_size > root.numel:
                raise BadInput(path, f"storage view {view_key!r} lies outside storage {key!r}")
            views[str(view_key)] = (key, offset)
            return StorageRef(str(view_key), stype.dtype, location, view_size, True)

        root, up = unpickle(f, resolve, path, "legacy object pickle")
        keys, up_keys = unpickle(f, _no_pid, path, "legacy storage-key list")
        ups = [up_magic, up_proto, up_info, up, up_keys]
        for u in ups:  # torch.load without weights_only would run a payload in any of the five
            if refuse:
                _refuse_dangerous(path, u)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise BadInput(path, "legacy storage-key list is malformed")
        raw = RawCheckpoint(path=path, format=Format.TORCH_LEGACY, root=root, files=[path],
                            byteorder="little" if little else "big",
                            globals_seen=[g for u in ups for g in u.globals_seen],
                            untrusted=list(dict.fromkeys(g for u in ups for g in u.untrusted)),
                            dangerous=list(dict.fromkeys(g for u in ups for g in u.dangerous)))
        pos = _locate_storages(f, raw, keys, roots, views, size)
        if not little:
            raw.warnings.append("tensors were saved big-endian")
        return raw, pos, size


def _locate_storages(f: BinaryIO, raw: RawCheckpoint, keys: list[str], roots: dict[str, StorageRef],
                     views: dict[str, tuple[str, int]], size: int) -> int:
    """Each storage's bytes after the pickles (an element count, then the elements), in the order of
    the key list, into raw.storages (views at their root's offset); the offset after the last one."""
    path, pos = raw.path, f.tell()
    for key in keys:
        ref = roots.get(key)
        if ref is None:
            raise BadInput(path, f"legacy storage list names {key!r}, which the object never uses")
        (count,) = struct.unpack("<q", read_exact(f, pos, 8, path, f"storage {key!r} header"))
        nbytes = count * itemsize(ref.dtype)
        if count != ref.numel:
            raise BadInput(path, f"storage {key!r} holds {count} elements but the pickle declares {ref.numel}")
        if pos + 8 + nbytes > size:
            raise BadInput(path, f"truncated file: storage {key!r} needs {nbytes} bytes at offset {pos + 8}")
        raw.storages[key] = (path, pos + 8)
        pos += 8 + nbytes
    missing = sorted(set(roots) - set(raw.storages))
    if missing:
        raise BadInput(path, f"truncated file: storages {missing[:3]} have no data")
    for view_key, (root_key, offset) in views.items():
        src, off = raw.storages[root_key]
        raw.storages[view_key] = (src, None if off is None else off + offset * itemsize(roots[root_key].dtype))
    return pos


def scan(path: str, acc: Findings) -> Format:
    """A legacy torch file (five pickles, the storages, nothing after) or a bare pickle stream."""
    from ..errors import StatecliError
    from ..pickle.pickles import scan_stream
    from ..state import Verdict

    refused = None
    try:
        end, size = storages_end(path)
    except BadInput as exc:
        legacy = not isinstance(exc, NotACheckpoint)
        if legacy:
            acc.errors.append(exc.problem)
        refused = exc.problem
    except StatecliError:
        legacy = False
    else:
        with open_regular(path) as f:
            scan_stream(f, "pickle", acc, max_pickles=5)
        if end < size:
            tail_findings(path, end, size, acc)
        return Format.TORCH_LEGACY
    with open_regular(path) as f:
        stop = scan_stream(f, "pickle", acc, max_pickles=5 if legacy else None)
        size = f.seek(0, 2)
    if not legacy and refused and acc.errors and not acc.globals and not acc.problems:
        acc.errors[:] = [refused]  # no pickle at all (nothing resolved): what the file looks like
        return Format.PICKLE
    if not legacy and stop < size:
        acc.problems.append(f"{size - stop} byte(s) after the last pickle that are not a pickle")
    if not legacy and not acc.problems and not any(g.verdict is Verdict.DANGEROUS for g in acc.globals):
        acc.errors.append("not a checkpoint: a bare pickle, not a torch.save file")
    return Format.TORCH_LEGACY if legacy else Format.PICKLE


class TorchLegacyHandler(BaseHandler):
    """A pickle stream: a pre-1.6 torch.save file is read; a bare pickle is only scanned (refused)."""

    format = Format.TORCH_LEGACY

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return detect(head)

    def read(self, source: str) -> RawCheckpoint:
        return read(source)

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        return scan(source, findings)


HANDLER = TorchLegacyHandler()
