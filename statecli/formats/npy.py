"""numpy .npy/.npz files are not checkpoints, but an object array is a pickle after the npy header
(np.load(allow_pickle=True) runs it): its payload is found and reported like any other."""

from __future__ import annotations

import io
import zipfile

from ..pickle.pickles import Findings, scan_stream

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
