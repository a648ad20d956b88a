"""Pickle framing (PEP 3154) checked the way the pure-Python unpickler checks it.

The C unpickler of CPython before 3.13.15/3.14.7 did not enforce frame boundaries: an opcode or its
argument could run past the end of its FRAME, or a new FRAME could begin inside the previous one, and
the C reader then read different opcodes than a linear walk (pickletools.genops) of the same bytes
(python/cpython#154848: a pickle that disassembles as one BINBYTES runs GLOBAL os system ... REDUCE).
Pickles that frame correctly read the same both ways, so a framing violation is a finding in itself:
`scan` reports it and every reader refuses the file. `pickle.Pickler` never writes one.
"""

from __future__ import annotations

import io
import pickletools
from typing import Any, BinaryIO


def may_frame(data: bytes) -> bool:
    """Cheap gate: does `data` hold a byte that could be a FRAME opcode with a length that fits? Most
    torch.save pickles (protocol 2) have none, and then no walk is needed."""
    size = len(data)
    at = data.find(b"\x95")
    while at != -1 and at + 9 <= size:
        if int.from_bytes(data[at + 1:at + 9], "little") <= size - at - 9:
            return True
        at = data.find(b"\x95", at + 1)
    return False


class FrameCheck:
    """Feed it each opcode of a linear walk (`op(name, arg, start, end)`); `problems` collects every
    place the Python unpickler would stop with "pickle exhausted before end of frame" or "beginning of
    a new frame before end of current frame"."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.frame_end = -1
        self.problems: list[str] = []

    def op(self, name: str, arg: Any, start: int, end: int) -> None:
        if name == "FRAME":
            if start < self.frame_end:
                self._add(f"a FRAME at offset {start} begins before the frame ending at {self.frame_end} ends")
            self.frame_end = end + int(arg or 0)
            return
        if start < self.frame_end < end:
            self._add(f"{name} at offset {start} runs {end - self.frame_end} byte(s) past the end of its frame "
                      f"(offset {self.frame_end})")

    def _add(self, what: str) -> None:
        if len(self.problems) < 3:
            self.problems.append(f"{self.where}: bad pickle framing: {what}; older CPython C unpicklers read "
                                 "other opcodes here than a static walk shows")


def frame_problems(data: bytes, where: str) -> list[str]:
    """Framing violations of the first pickle in `data` (empty when it has no FRAME or frames well)."""
    if not may_frame(data):
        return []
    check = FrameCheck(where)
    walk(io.BytesIO(data), check)
    return check.problems


def walk(stream: BinaryIO, check: FrameCheck) -> None:
    """Feed `check` every opcode genops reads from `stream` (to STOP or the first byte it cannot read).
    Each opcode's end is the stream position right after genops yields it, so the opcode before an
    unreadable byte is checked too (a straddling argument often hides just such a byte)."""
    try:
        for op, arg, at in pickletools.genops(stream):
            start = at if at is not None else 0
            check.op(op.name, arg, start, stream.tell())
            if op.name == "STOP":
                break
    except Exception:  # noqa: BLE001 - a stream genops cannot read: the readers report it on their own
        pass
