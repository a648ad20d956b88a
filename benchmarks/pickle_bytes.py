"""The pickle assembler and container helpers the scanner corpus and the security tests build files with.

Pickles are assembled opcode by opcode (nothing here ever unpickles anything); torch containers
(zip and legacy) are written by torch.save and taken apart or re-packed as bytes. The verdict names
and their order (`RANK`) are the scale the corpus states its expectations on.
"""

from __future__ import annotations

import io
import pickletools
import struct
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch's legacy-format magic, the first pickle of a legacy file
MARKER = "PWNED"
SAFE, NEEDS_TRUST, MALFORMED, DANGEROUS = "safe", "needs-trust", "malformed", "dangerous"
RANK = {SAFE: 0, NEEDS_TRUST: 1, MALFORMED: 2, DANGEROUS: 3}


@dataclass
class Case:
    name: str
    path: str
    expected: str  # least severe acceptable verdict: dangerous, malformed, needs-trust or safe
    technique: str  # one line
    reaches_torch_load: bool = True  # torch.load(weights_only=False) would unpickle the payload


# -- a tiny pickle assembler ------------------------------------------------------------------------

def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def uni(s: str) -> bytes:
    """SHORT_BINUNICODE (or BINUNICODE for long strings)."""
    b = s.encode("utf-8")
    return b"\x8c" + bytes([len(b)]) + b if len(b) < 256 else b"X" + struct.pack("<I", len(b)) + b


def binunicode(s: str) -> bytes:
    """BINUNICODE: protocol 1+, so also valid in a protocol 2 stream."""
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def binbytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def glob(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0 text form, valid in every protocol)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sglob(module: str, name: str) -> bytes:
    """STACK_GLOBAL with adjacent string operands (protocol 4)."""
    return uni(module) + uni(name) + b"\x93"


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


MARK, TUPLE, TUPLE1, TUPLE2, REDUCE, POP, STOP = b"(", b"t", b"\x85", b"\x86", b"R", b"0", b"."
EMPTY_DICT, EMPTY_TUPLE, SETITEM, MEMOIZE, STACK_GLOBAL, NONE = b"}", b")", b"s", b"\x94", b"\x93", b"N"


def call(callee: bytes, *args: bytes) -> bytes:
    """callee(*args) with REDUCE; each arg is already-assembled opcodes pushing one object."""
    return callee + MARK + b"".join(args) + TUPLE + REDUCE


def wrap(body: bytes, p: int = 2) -> bytes:
    """A whole pickle: run `body` (one object), drop its result, return an empty dict."""
    return proto(p) + body + POP + EMPTY_DICT + STOP


def str_list(items: Sequence[str]) -> bytes:
    return b"]" + MARK + b"".join(binunicode(s) for s in items) + b"e"


# -- torch containers -------------------------------------------------------------------------------

try:
    import torch as _torch_mod

    class TinyNet(_torch_mod.nn.Module):
        """A module-level class: torch.save(model) pickles it by reference (needs trust to load)."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = _torch_mod.nn.Linear(4, 2)
            self.bn = _torch_mod.nn.BatchNorm1d(2)

except ImportError:  # pragma: no cover - the corpus needs torch for its controls
    TinyNet = None  # type: ignore[assignment,misc]


def sample_state_dict() -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    return {"fc.weight": torch.randn(2, 4, generator=g), "fc.bias": torch.zeros(2),
            "bn.running_mean": torch.zeros(2), "bn.num_batches_tracked": torch.tensor(3)}


def torch_zip_bytes(obj: object) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def legacy_bytes(obj: object) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def write_zip(members: Sequence[tuple[str, bytes]], compress: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are deliberate in one case
        with zipfile.ZipFile(buf, "w", compress) as zf:
            for name, data in members:
                zf.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def replace_member(archive: bytes, suffix: str, data: bytes) -> bytes:
    """A real torch.save archive with the member ending in `suffix` replaced (the rest kept)."""
    members = zip_members(archive)
    assert any(n.endswith(suffix) for n, _ in members), suffix
    return write_zip([(n, data if n.endswith(suffix) else d) for n, d in members])


def zip_records(zipdata: bytes) -> tuple[list[int], list[int]]:
    """Offsets of every local file header and central directory header (a well-formed zip)."""
    with zipfile.ZipFile(io.BytesIO(zipdata)) as zf:
        local = [i.header_offset for i in zf.infolist()]
    eocd = zipdata.rfind(b"PK\x05\x06")
    count, _, cd_off = struct.unpack("<HII", zipdata[eocd + 10:eocd + 20])
    central, pos = [], cd_off
    for _ in range(count):
        central.append(pos)
        nlen, xlen, clen = struct.unpack("<HHH", zipdata[pos + 28:pos + 34])
        pos += 46 + nlen + xlen + clen
    return local, central


def split_pickles(data: bytes, n: int) -> tuple[list[bytes], bytes]:
    """The first n pickles of a legacy torch file and the bytes after them (static: genops only)."""
    out, pos = [], 0
    for _ in range(n):
        end = pos
        for op, _arg, at in pickletools.genops(io.BytesIO(data[pos:])):
            if op.name == "STOP":
                end = pos + (at or 0) + 1
                break
        out.append(data[pos:end])
        pos = end
    return out, data[pos:]


def magic_long() -> bytes:
    return b"\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little")
