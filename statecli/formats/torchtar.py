"""Pre-0.4 tar-format torch files: not read (torch.save has not written them since 2018), but every
member torch.load would unpickle ('sys_info', 'pickle', 'storages', 'tensors'), and every other
member, is scanned as a sequence of pickles (or as an .npy), so a payload there is a finding for the
loader exactly as for `scan`."""

from __future__ import annotations

import tarfile
from typing import NoReturn

from ..errors import BadInput, UnsafeContent
from ._common import open_regular
from .pickles import Findings, scan_stream

MAX_MEMBER = 1 << 30
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
                scan_stream(data, member.name, sub)
                acc.globals += sub.globals
                acc.calls += sub.calls
                acc.pickles += sub.pickles
                acc.problems += sub.problems
    except (tarfile.TarError, OSError, EOFError) as exc:
        acc.errors.append(f"corrupt tar archive: {exc}")
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
