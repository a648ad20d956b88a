"""numpy .npy/.npz files are not checkpoints, but an object array is a pickle after the npy header
(np.load(allow_pickle=True) runs it): its payload is found and reported like any other."""

from __future__ import annotations

import ast
import struct
import zipfile

from ..errors import BadInput
from .pickles import Findings, scan_stream

MAGIC = b"\x93NUMPY"
MAX_MEMBER = 64 << 20


def detect(head: bytes) -> bool:
    return head.startswith(MAGIC)


def pickle_offset(data: bytes) -> int | None:
    """Where the pickle of an object array starts; None for a numeric array or a broken header."""
    if not data.startswith(MAGIC) or len(data) < 10:
        return None
    major = data[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", data[8:10])
        start = 10
    else:
        if len(data) < 12:
            return None
        (hlen,) = struct.unpack("<I", data[8:12])
        start = 12
    text = data[start:start + hlen].decode("latin-1", "replace")
    try:
        header = ast.literal_eval(text.strip())  # a dict literal of str/bool/tuple: no code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    descr = header.get("descr") if isinstance(header, dict) else None
    return start + hlen if _has_object(descr) else None


def _has_object(descr: object) -> bool:
    if isinstance(descr, str):
        return "O" in descr
    if isinstance(descr, (list, tuple)):
        return any(_has_object(d) for d in descr)
    return False


def scan_bytes(data: bytes, where: str, acc: Findings) -> bool:
    """Scan an object array's pickle; False when the array is numeric (nothing to scan)."""
    off = pickle_offset(data)
    if off is None:
        return False
    scan_stream(data, f"{where} (object array)", acc, start=off)
    return True


def scan_zip(path: str, acc: Findings) -> int:
    """Every .npy member of a zip (an .npz): object arrays scanned. Returns how many were pickles."""
    n = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                if info.file_size > MAX_MEMBER:
                    acc.problems.append(f"{info.filename}: a {info.file_size}-byte member not scanned")
                    continue
                with zf.open(info) as member:
                    head = member.read(MAX_MEMBER)
                n += scan_bytes(head, info.filename, acc)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        acc.errors.append(f"corrupt zip archive: {exc}")
    return n


def not_a_checkpoint(path: str, what: str) -> BadInput:
    return BadInput(path, f"not a checkpoint (looks like {what})")
