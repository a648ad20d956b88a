"""`-` as an input path: the checkpoint on stdin, spooled to a private temporary file that every reader
can seek in and mmap (a pipe allows neither), removed when the command ends, however it ends."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from ..errors import BadInput, StatecliError, UsageError
from ..state import Checkpoint

STDIN = "-"
STDIN_NAME = "<stdin>"  # how a message names the input `-` (never the spooled copy's temp path)
_CHUNK = 1 << 20


@contextmanager
def local_input(path: str, stream: BinaryIO | None = None) -> Iterator[str]:
    """`path` itself, or for `-` the path of a temporary copy of stdin (`stream` in tests)."""
    if path != STDIN:
        yield path
        return
    if stream is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError(None, "'-' reads a checkpoint from stdin, and stdin is a terminal",
                             "pipe or redirect one, e.g. statecli inspect - < model.safetensors")
        stream = sys.stdin.buffer
    # A private folder (mode 0700), so no other user can swap the file between the spool and the read;
    # the file is named "stdin" so messages about it say where the bytes came from.
    folder = tempfile.mkdtemp(prefix="statecli-stdin-")
    try:
        spooled = os.path.join(folder, "stdin")
        with open(spooled, "xb") as out:
            shutil.copyfileobj(stream, out, _CHUNK)
            empty = out.tell() == 0
        if empty:
            raise BadInput(STDIN_NAME, "is empty: nothing was piped in")
        yield spooled
    except StatecliError as exc:  # an error about the copy names the input: <stdin>, not the temp path
        exc.path = STDIN_NAME if exc.path and exc.path.startswith(folder) else exc.path
        exc.problem = exc.problem.replace(spooled, STDIN_NAME)
        exc.hint = exc.hint and exc.hint.replace(spooled, STDIN_NAME)
        exc.args = (exc.message,)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def named(ck: Checkpoint, path: str) -> Checkpoint:
    """The checkpoint read from `path` as output names it: `-` is <stdin>, never its spooled copy's temp path."""
    from dataclasses import replace

    return replace(ck, label=STDIN_NAME) if path == STDIN else ck


def shown_path(ck: Checkpoint) -> str:
    """The path as every output names it: the label (`<stdin>` for `-`, not its spooled copy), else `path`."""
    return ck.label or ck.path


def shown_files(ck: Checkpoint) -> tuple[str, ...]:
    """`files` as output names them: the labelled path's own file by its label."""
    return tuple(ck.label if f == ck.path and ck.label else f for f in ck.files)
