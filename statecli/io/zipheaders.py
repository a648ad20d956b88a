"""The zip local headers a remote metadata read did not fetch. Reading a remote torch.save zip for
`inspect`/`size`/`diff` takes the central directory and data.pkl only (a handful of requests at any size);
each storage's data offset is then torch's aligned layout, predicted from the central directory. The
local header that must agree with it is checked here before any value of that storage is read (one small
range, once per storage), and `scan` reads every local header. What the metadata read left to those two
places is listed for `-v` and SECURITY.md."""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import Protocol

from ..errors import BadInput

_LOCAL = struct.Struct("<4s5H3L2H")
_MAGIC = b"PK\x03\x04"
SKIPPED = ("zip local headers match the central directory (names, data offsets; checked before a "
           "storage's values are read)", "every byte of the archive belongs to a member (scan checks it)")


class _Source(Protocol):
    def pread(self, offset: int, n: int) -> bytes: ...


@dataclass(frozen=True)
class Expected:
    header_offset: int
    name: str


_LOCK = threading.Lock()
_EXPECTED: dict[tuple[str, int], Expected] = {}  # (url, predicted data offset) -> the member's local header
_CHECKED: set[tuple[str, int]] = set()
_SKIPPED: set[str] = set()  # urls whose metadata was read without their local headers


def aligned_start(header_offset: int, name: bytes, nbytes: int, alignment: int) -> int:
    """Where torch.save puts a record's first data byte: after the 30-byte local header, the name and an
    extra field of at least 4 bytes (more for zip64 sizes and offsets), padded to `alignment`
    (caffe2/serialize/inline_container.cc getPadding)."""
    start = header_offset + _LOCAL.size + len(name) + 4
    if nbytes >= 0xFFFFFFFF or header_offset >= 0xFFFFFFFF:  # the zip64 extra field, its sizes and offset
        start += 4 + (16 if nbytes >= 0xFFFFFFFF else 0) + (8 if header_offset >= 0xFFFFFFFF else 0)
    return -(-start // alignment) * alignment


def expect(url: str, data_offset: int, header_offset: int, name: str) -> None:
    with _LOCK:
        _EXPECTED[(url, data_offset)] = Expected(header_offset, name)
        _SKIPPED.add(url)


def skipped(url: str) -> tuple[str, ...]:
    """The container checks a metadata read of `url` left to the value reads and `scan` (none: all done)."""
    with _LOCK:
        return SKIPPED if url in _SKIPPED else ()


def check(url: str, data_offset: int | None, src: _Source) -> None:
    """Before values at `data_offset` of `url` are read: the local header there must say what the
    central directory said, and put the data where it was predicted. A file that disagrees is
    refused (torch.load reads the local header; statecli would read other bytes than torch)."""
    key = (url, data_offset or 0)
    with _LOCK:
        want = _EXPECTED.get(key)
        if want is None or key in _CHECKED:
            return
    n = key[1] - want.header_offset
    head = src.pread(want.header_offset, n) if n >= _LOCAL.size else b""
    fields = _LOCAL.unpack_from(head) if len(head) >= _LOCAL.size else None
    ok = (fields is not None and fields[0] == _MAGIC and _LOCAL.size + fields[9] + fields[10] == n
          and head[_LOCAL.size:_LOCAL.size + fields[9]].decode("utf-8", "replace") == want.name)
    if not ok:
        raise BadInput(url, f"zip local header of {want.name!r} does not match the central directory (its data "
                            "is not where torch.save puts it)", "run statecli scan on it; do not load it")
    with _LOCK:
        _CHECKED.add(key)


def clear() -> None:
    with _LOCK:
        _EXPECTED.clear()
        _CHECKED.clear()
        _SKIPPED.clear()
