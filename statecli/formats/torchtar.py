"""Pre-0.4 tar-format torch files: not read (torch.save has not written them since 2018), but every
member torch.load would unpickle ('sys_info', 'pickle', 'storages', 'tensors'), and every other
member, is scanned as a sequence of pickles (or as an .npy), so a payload there is a finding for the
loader exactly as for `scan`."""

from __future__ import annotations

import io
import struct
import tarfile
from typing import Any, NoReturn

from ..errors import BadInput, UnsafeContent
from ..pickle.pickles import Context, Findings, scan_one, scan_stream
from ..pickle.unpickler import RestrictedUnpickler, StorageType
from ..state import Format
from ..units import itemsize
from ._common import RawCheckpoint, open_regular
from .handler import BaseHandler

MAX_MEMBER = 1 << 30
_HEAD = 1 << 16
UNSUPPORTED = "a pre-0.4 tar-format torch file; not supported (load and re-save it with torch)"


def scan_tar(path: str, acc: Findings) -> None:
    """Every member's pickles into `acc`; a broken archive is an error, never a crash."""
    from . import npy

    try:
        with open_regular(path) as f, tarfile.open(fileobj=f, mode="r:") as tf:  # a DCP item is no path
            for member in tf.getmembers():
                fobj = tf.extractfile(member) if member.isfile() else None
                if fobj is None:
                    continue
                data = fobj.read(MAX_MEMBER)
                if member.name.endswith(".npy") or npy.detect(data):
                    npy.scan_bytes(data, member.name, acc)
                    continue
                sub = Findings()
                _scan_member(data, member.name, sub)
                acc.globals += sub.globals
                acc.calls += sub.calls
                acc.pickles += sub.pickles
                acc.problems += sub.problems
    except (tarfile.TarError, OSError, EOFError) as exc:
        acc.errors.append(f"corrupt tar archive: {exc}")
    from ..pickle.pickles import scan_nested

    with open_regular(path) as f:  # pickle.load of the file itself reads a header's name field as opcodes
        scan_nested(f.read(_HEAD), "the file read as a pickle", acc)
    if not acc.errors:
        acc.errors.append(UNSUPPORTED)


def refuse(path: str) -> NoReturn:
    """The loader's answer to a tar file: UnsafeContent where `scan` finds a payload or a finding
    (exit 3, as `scan`), BadInput otherwise (unsupported, exit 2)."""
    acc = Findings()
    scan_tar(path, acc)
    if acc.dangerous:
        raise UnsafeContent(path, "pickle references code that loading would run: " + ", ".join(acc.dangerous),
                            "refusing the file; do not torch.load it")
    if acc.problems:
        raise UnsafeContent(path, acc.problems[0], "refusing the file (statecli scan lists every finding)")
    raise BadInput(path, acc.errors[0])


def detect(head: bytes) -> bool:
    """A tar file as tarfile.open(mode="r:") decides it (torch's legacy loader tries that before
    pickle.load): a first 512-byte header whose checksum holds, ustar magic or not (V7, GNU, pax)."""
    if len(head) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(head[:tarfile.BLOCKSIZE], tarfile.ENCODING, "surrogateescape")
    except Exception:  # noqa: BLE001 - any failure: tarfile.open does not take it as a tar
        return False
    return True


def _scan_member(data: bytes, name: str, acc: Findings) -> None:
    """A member's pickles as torch's legacy loader reads them: `storages` is a count, then per storage
    a pickle and its raw bytes (an int64 element count, then the elements), then a views pickle;
    `tensors` is a count, then per tensor a pickle and its raw dims; every pickle after raw bytes is
    scanned. Where the records stop making sense (torch would stop), the rest is read as pickles."""
    pos = 0
    if name in ("storages", "tensors"):
        pos = _records(data, name, acc)
    scan_stream(data, name if pos == 0 else f"{name} at {pos}", acc, start=pos)


def _records(data: bytes, name: str, acc: Findings) -> int:
    count, pos = _pickle_at(data, 0, name, acc)
    if type(count) is not int or count < 0:
        return pos
    for i in range(count):
        args, end = _pickle_at(data, pos, f"{name} record {i}", acc)
        if end == pos or not isinstance(args, tuple) or len(args) != 3:
            return end
        if name == "storages":
            if not isinstance(args[2], StorageType) or end + 8 > len(data):
                return end
            (numel,) = struct.unpack_from("<q", data, end)
            pos = end + 8 + max(numel, 0) * itemsize(args[2].dtype)
        else:
            if end + 8 > len(data):
                return end
            (ndim,) = struct.unpack_from("<i", data, end)
            pos = end + 8 + 16 * max(ndim, 0) + 8
        if pos > len(data):
            return end
    if name == "storages":
        _, pos = _pickle_at(data, pos, f"{name} views", acc)
    return pos


def _pickle_at(data: bytes, pos: int, where: str, acc: Findings) -> tuple[Any, int]:
    """(the value of the pickle at `pos` as our inert unpickler reads it, offset after it); its
    globals go into `acc` through the one scanner."""
    bio = io.BytesIO(data)
    end, ok = scan_one(bio, pos, where, acc, Context())
    if not ok:
        return None, pos
    bio.seek(pos)
    try:
        value = RestrictedUnpickler(bio, lambda pid: None, lenient=True).load_value()
    except Exception:  # noqa: BLE001 - scan_one read it cleanly; a value we cannot use ends the walk
        return None, end
    return value, end


class TorchTarHandler(BaseHandler):
    """Pre-0.4 tar checkpoints: scanned, never read (the loader refuses them through the scan)."""

    format = Format.TORCH_TAR

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return detect(head)

    def read(self, source: str) -> RawCheckpoint:
        refuse(source)  # exit 3 where scan finds a payload in a member, else unsupported (exit 2)

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        scan_tar(source, findings)
        return Format.TORCH_TAR


HANDLER = TorchTarHandler()
