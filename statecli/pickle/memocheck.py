"""Memo indices checked before the C unpickler runs. Its memo is an array grown to twice the largest
index stored to, every slot written: `N r\\x00\\x00\\x00\\x05 .` (LONG_BINPUT 83,886,080, eight bytes)
costs 1.3 GB, a few such puts several. Every pickler numbers its memo from 0 (one slot per PUT), so an
index past the pickle's length is never an honest one: refused before any memory is spent on it."""

from __future__ import annotations

import mmap
import pickletools
import re

_FLOOR = 1 << 20  # indices below this cost at most 16 MiB whatever the pickle's length
_NEWLINE, _LEN1, _LEN4S, _LEN4, _LEN8, _LINES2 = -1, -2, -3, -4, -5, -6


def _table() -> list[tuple[int, int]]:
    """opcode byte -> (argument kind, fixed length) for the walk; (0, -100) marks a byte no opcode has."""
    out = [(0, -100)] * 256
    for op in pickletools.opcodes:
        a = op.arg
        if a is None:
            out[ord(op.code)] = (0, 0)
        elif a.name == "stringnl_noescape_pair":
            out[ord(op.code)] = (_LINES2, 0)
        elif a.n >= 0:
            out[ord(op.code)] = (a.n, 0)
        elif a.n == pickletools.UP_TO_NEWLINE:
            out[ord(op.code)] = (_NEWLINE, 0)
        elif a.n == pickletools.TAKEN_FROM_ARGUMENT1:
            out[ord(op.code)] = (_LEN1, 0)
        elif a.n == pickletools.TAKEN_FROM_ARGUMENT4:
            out[ord(op.code)] = (_LEN4S, 0)
        elif a.n == pickletools.TAKEN_FROM_ARGUMENT4U:
            out[ord(op.code)] = (_LEN4, 0)
        else:
            out[ord(op.code)] = (_LEN8, 0)
    return out


_TABLE = _table()
_STOP, _LONG_BINPUT, _PUT, _STACK_GLOBAL = ord("."), ord("r"), ord("p"), 0x93


_SHORT = 64


def _run_pattern() -> re.Pattern[bytes]:
    """A run of opcodes whose length is fixed, matched at C speed: the walk's Python loop then turns
    only for strings, text opcodes, STOP and a LONG_BINPUT at 2**20 or past (its index is checked)."""
    by_len: dict[int, list[int]] = {}
    for code, (kind, bad) in enumerate(_TABLE):
        if not bad and kind >= 0 and code not in (_STOP, _LONG_BINPUT, _STACK_GLOBAL):
            by_len.setdefault(kind, []).append(code)
    alts = [b"[" + b"".join(re.escape(bytes([c])) for c in codes) + b"]" + (b"[\x00-\xff]{%d}" % n if n else b"")
            for n, codes in sorted(by_len.items())]
    alts.append(b"r[\x00-\xff][\x00-\xff][\x00-\x0f]\x00")
    # Text opcodes other than PUT end at a newline (GLOBAL and INST at the second); short BINUNICODE
    # strings (dict keys, storage keys) by their length byte: one alternative per length.
    alts.append(b"[ci][^\n]*\n[^\n]*\n")
    alts.append(b"[ILFSVgP][^\n]*\n")
    alts.append(b"X(?:" + b"|".join(re.escape(bytes([k, 0, 0, 0])) + (b"[\x00-\xff]{%d}" % k if k else b"")
                                  for k in range(_SHORT)) + b")")
    return re.compile(b"(?:" + b"|".join(alts) + b")*+", re.DOTALL)  # possessive: no backtracking state


_RUN = _run_pattern()


def memo_problem(data: bytes | mmap.mmap, start: int = 0, stack_globals: list[int] | None = None) -> str | None:
    """Why the pickle at data[start:] would make the C unpickler's memo huge, else None. Walks opcode
    lengths only (no object is built); stops at STOP, at the end, or at a byte no opcode has (the C
    unpickler then fails there itself). The offset of every STACK_GLOBAL opcode is added to
    `stack_globals` on the way (torch.save's protocol 2 writes none: readers check operands only then)."""
    buf = data
    n = len(buf)
    limit = max(n - start, _FLOOR)
    i = start
    table = _TABLE
    find = buf.find
    run = _RUN.match
    while i < n:
        i = run(buf, i).end()  # type: ignore[union-attr]  # the pattern matches the empty string
        if i >= n:
            return None
        op = buf[i]
        kind, bad = table[op]
        i += 1
        if bad:
            return None
        if kind > 0:
            if op == _LONG_BINPUT and i + 4 <= n:
                idx = int.from_bytes(buf[i:i + 4], "little")
                if idx >= limit:
                    return f"memo index {idx:,} in a pickle of {n - start:,} bytes (no pickler writes it)"
            i += kind  # past FRAME's length too: a frame's opcodes are walked like any others
        elif kind == 0:
            if op == _STOP:
                return None
            if op == _STACK_GLOBAL and stack_globals is not None:
                stack_globals.append(i - 1)
        elif kind == _NEWLINE or kind == _LINES2:
            end = find(b"\n", i)
            if end < 0:
                return None
            if op == _PUT and end - i > 6:
                text = bytes(buf[i:end])
                if text.isdigit() and (len(text) > 18 or int(text) >= limit):
                    return f"memo index {int(text):,} in a pickle of {n - start:,} bytes (no pickler writes it)"
            i = end + 1
            if kind == _LINES2:
                end = find(b"\n", i)
                if end < 0:
                    return None
                i = end + 1
        elif kind == _LEN1:
            if i >= n:
                return None
            i += 1 + buf[i]
        elif kind == _LEN4S or kind == _LEN4:
            i += 4 + int.from_bytes(buf[i:i + 4], "little", signed=kind == _LEN4S)
        else:
            i += 8 + int.from_bytes(buf[i:i + 8], "little")
    return None


def stream_memo_problem(source: object, stack_globals: list[int]) -> str | None:
    """memo_problem for what the unpickler reads: bytes, a BytesIO (from its position) or a local file
    (mapped, so only the pickle's pages are touched). Other streams are read by the C unpickler as is
    (-1 in `stack_globals`: not walked, a STACK_GLOBAL may be there)."""
    import io

    if isinstance(source, (bytes, bytearray)):
        return memo_problem(bytes(source), 0, stack_globals)
    if isinstance(source, io.BytesIO):
        return memo_problem(source.getvalue(), source.tell(), stack_globals)  # BytesIO(bytes) shares, no copy
    try:
        fd = source.fileno()  # type: ignore[attr-defined]
        pos = source.tell()  # type: ignore[attr-defined]
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
            return memo_problem(m, pos, stack_globals)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        stack_globals.append(-1)
        return None
