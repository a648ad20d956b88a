"""numpy .npy/.npz files are not checkpoints, but an object array is a pickle after the npy header
(np.load(allow_pickle=True) runs it): its payload is found and reported like any other."""

from __future__ import annotations

import io
import zipfile

from ..errors import NotACheckpoint, UnsafeContent
from ..pickle.pickles import Findings, scan_stream
from ..state import Format
from ._common import RawCheckpoint, open_regular
from .handler import BaseHandler

MAGIC = b"\x93NUMPY"
MAX_MEMBER = 64 << 20


def detect(head: bytes) -> bool:
    return head.startswith(MAGIC)


def pickle_offset(data: bytes) -> int | None:
    """Where the pickle of an object array starts; None for a numeric array or a broken header.
    The header is parsed by numpy's own reader (the one np.load uses; it reads the header bytes only,
    ast.literal_eval and np.dtype): an object array is what np.load unpickles, whatever the descr
    spells ('O', 'object', [('a', 'object')], nested or subarray fields)."""
    from numpy.lib import format as npformat

    if not data.startswith(MAGIC) or len(data) < 10:
        return None
    version = (data[6], data[7])
    # np.load with allow_pickle=True reads headers of any size; version 3.0 is 2.0 with a utf-8
    # header (only field names can differ: the object test does not).
    readers = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0,
               (3, 0): npformat.read_array_header_2_0}
    reader = readers.get(version)
    if reader is None:
        return None
    header = io.BytesIO(data[8:])
    try:
        _, _, dtype = reader(header, max_header_size=len(data))
    except Exception:  # noqa: BLE001 - np.load refuses a header numpy cannot parse: nothing runs
        return None
    return 8 + header.tell() if dtype.hasobject else None


def scan_bytes(data: bytes, where: str, acc: Findings) -> bool:
    """Scan an object array's pickle; False when the array is numeric (nothing to scan)."""
    off = pickle_offset(data)
    if off is None:
        return False
    scan_stream(data, f"{where} (object array)", acc, start=off)
    return True


def scan_zip(path: str, acc: Findings) -> int:
    """Every array member of a zip (an .npz): object arrays scanned. Returns how many were pickles.
    np.load's NpzFile reads a member as an array by its magic bytes, whatever its name."""
    n = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.flag_bits & 0x1:
                    continue  # encrypted: np.load (zipfile) cannot open it without a password
                with zf.open(info) as member:
                    if member.read(len(MAGIC)) != MAGIC:
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


def refuse_payload(path: str, zipped: bool) -> None:
    """An object array is a pickle np.load would run: a payload there is a finding, not a format error."""
    acc = Findings()
    if zipped:
        scan_zip(path, acc)
    else:
        with open_regular(path) as f:
            scan_bytes(f.read(MAX_MEMBER), path, acc)
    if acc.dangerous:
        raise UnsafeContent(path, "numpy object array pickle references code that loading would run: "
                            + ", ".join(acc.dangerous), "refusing the file; do not np.load it")


class NpyHandler(BaseHandler):
    """A bare .npy is not a checkpoint: never read, but its object-array pickle is scanned."""

    format = Format.NUMPY_ARRAY

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return detect(head)

    def read(self, source: str) -> RawCheckpoint:
        refuse_payload(source, zipped=False)
        raise NotACheckpoint(source, "not a checkpoint (looks like a numpy array)")

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        with open_regular(source) as f:
            data = f.read(MAX_MEMBER)
        if not scan_bytes(data, source, findings):
            findings.errors.append("not a checkpoint (looks like a numpy array)")
        return Format.NUMPY_ARRAY


HANDLER = NpyHandler()
