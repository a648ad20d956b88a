"""STACK_GLOBAL operands checked for the readers: a global whose module or name is not a constant string
of the stream (pushed by a string opcode, directly or through the memo) is chosen while loading
(min('os', 'zz'), format(...), str.strip, dict.get, a persistent id): dangerous whatever it names.
`statecli scan` decides the same in its own stack simulation (pickle/pickles.py, COMPUTED_GLOBAL)."""

from __future__ import annotations

import io
import pickletools
from typing import Any, BinaryIO

from ..errors import UnsafeContent

_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                      "SHORT_BINSTRING"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


class _Other:
    pass


_OTHER = _Other()  # anything that is not a constant string (marks included)


def consumed(data: bytes | BinaryIO, start: int) -> bytes:
    """The bytes an unpickler read from `data` since `start`: the rest of `data`, or the stream from
    `start` to its position (where it is left)."""
    if isinstance(data, bytes):
        return data[start:]
    end = data.tell()
    data.seek(start)
    head = data.read(end - start)
    data.seek(end)
    return head


def stream_computed_global(data: bytes | BinaryIO, start: int) -> int | None:
    """computed_stack_global for the pickle the unpickler read from `data` (bytes, or a stream now past
    it), as an offset in `data`. Costs a byte search unless the pickle holds a STACK_GLOBAL byte
    (torch.save's protocol 2 has none)."""
    head = consumed(data, start)
    if b"\x93" not in head:
        return None
    at = computed_stack_global(head)
    return None if at is None else start + at


def refuse_computed_global(data: bytes | BinaryIO, start: int, path: str) -> None:
    """A global chosen while loading is refused by every reader, as `scan` rates it."""
    at = stream_computed_global(data, start)
    if at is not None:
        raise UnsafeContent(path, f"STACK_GLOBAL at offset {at} takes a module or name computed while loading: "
                            "a global chosen at load time", "refusing the file")


def computed_stack_global(data: bytes) -> int | None:
    """Offset of the first STACK_GLOBAL of the first pickle in `data` whose module or name is not a
    constant string, else None. Stops at STOP or at the first byte a linear walk cannot read."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, at in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in _STRINGS:
                stack.append(("s",))
            elif name in _PUTS:
                memo[int(arg or 0)] = stack[-1] if stack else _OTHER
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _OTHER
            elif name in _GETS:
                stack.append(memo.get(int(arg or 0), _OTHER))
            elif name == "DUP":
                stack.append(stack[-1] if stack else _OTHER)
            elif name == "STACK_GLOBAL":
                operands = stack[-2:]
                del stack[-2:]
                if len(operands) < 2 or any(o != ("s",) for o in operands):
                    return at or 0
                stack.append(_OTHER)
            elif name == "STOP":
                return None
            else:
                _apply(stack, op)
    except Exception:  # noqa: BLE001 - a stream genops cannot read: the C unpickler fails there too
        return None
    return None


def _apply(stack: list[Any], op: Any) -> None:
    before = op.stack_before
    if pickletools.markobject in before:
        while stack and stack.pop() is not _MARK:
            pass
        del stack[max(0, len(stack) - before.index(pickletools.markobject)):]
    else:
        del stack[max(0, len(stack) - len(before)):]
    stack.extend(_MARK if item is pickletools.markobject else _OTHER for item in op.stack_after)


_MARK = _Other()
