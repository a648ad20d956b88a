"""The rest of a model folder beside its rewritten weights: every file and subfolder (a
sentence-transformers `1_Pooling/`, tokenizers, READMEs) copied with its mode, links kept as links
while they stay inside the folder and copied as their targets when they leave it (a Hugging Face
cache snapshot links each file into ../../blobs)."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ..errors import BadInput
from .result import WriteLog

# Top-level weight files of the model the output's own weights replace: a float32 pytorch_model.bin
# copied beside a float16 model.safetensors would be loaded instead of it (or mislead a reader).
_SUPERSEDED = re.compile(r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?")
# A git checkout's history and huggingface_hub's download records (hashes of the input's files) are
# not the output's: they would describe files it no longer holds.
_NOT_COPIED = (".git", ".cache")
_OWN_TEMP = ".statecli-"  # a temp file of another statecli run (io/atomic.py names them so)
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


@dataclass
class _Tally:
    files: int = 0
    folders: int = 0
    links: int = 0
    followed: int = 0
    left: list[str] = field(default_factory=list)
    visited: set[str] = field(default_factory=set)  # real folders copied: a link cycle ends


def copy_folder(src: str, dst: str, rewritten: Collection[str], log: WriteLog,
                write_config: Callable[[str, str], None] | None = None) -> None:
    """Copy everything of folder `src` into `dst` except the weight files the rewrite wrote anew
    (`rewritten`: top-level names, plus the model's other weight files) and what `dst` already holds.
    `write_config(src_path, dst_path)` writes the top-level config.json instead of a plain copy."""
    tally = _Tally()
    root = os.path.realpath(src)
    _copy_dir(src, dst, root, "", set(rewritten), tally, write_config)
    parts = [f"{tally.files} file(s)"] + ([f"{tally.folders} folder(s)"] if tally.folders else [])
    if tally.links:
        parts.append(f"{tally.links} link(s) kept")
    if tally.followed:
        parts.append(f"{tally.followed} link(s) leaving the folder copied as their targets")
    log.note("copied the rest of the input folder: " + ", ".join(parts))
    if tally.left:
        log.note("not copied: " + ", ".join(tally.left[:6]) + (", ..." if len(tally.left) > 6 else "")
                 + " (weights this rewrite replaces, version-control and download records, special files)")


def _copy_dir(src: str, dst: str, root: str, rel: str, rewritten: set[str], tally: _Tally,
              write_config: Callable[[str, str], None] | None) -> None:
    tally.visited.add(os.path.realpath(src))
    for name in sorted(os.listdir(src)):
        s, d, where = os.path.join(src, name), os.path.join(dst, name), f"{rel}{name}"
        if name.startswith(_OWN_TEMP) or os.path.lexists(d):
            continue  # another run's temp file; or a name the rewrite itself wrote
        if not rel and (name in rewritten or _SUPERSEDED.fullmatch(name) or name in _NOT_COPIED):
            tally.left.append(name)
            continue
        try:
            _copy_one(s, d, root, where, rewritten, tally, write_config)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise  # io/atomic.py says it, with the space needed
            raise BadInput(s, f"cannot copy {where} into the output folder: {exc.strerror or exc}; nothing was "
                              "written") from exc


def _copy_one(s: str, d: str, root: str, where: str, rewritten: set[str], tally: _Tally,
              write_config: Callable[[str, str], None] | None) -> None:
    if os.path.islink(s):
        real = os.path.realpath(s)
        inside = real == root or real.startswith(root + os.sep)
        if inside or not os.path.exists(real):  # a dangling link stays what it was
            target = os.readlink(s)
            if os.path.isabs(target) and inside:  # keep pointing into the copy, not back at the input
                target = os.path.relpath(real, os.path.realpath(os.path.dirname(s)))
            os.symlink(target, d)
            tally.links += 1
            return
        tally.followed += 1
    if os.path.isdir(s):
        if os.path.realpath(s) in tally.visited:
            tally.left.append(f"{where}/ (a link back to a folder already copied)")
            return
        os.mkdir(d)
        _copy_dir(s, d, root, where + "/", rewritten, tally, write_config)
        shutil.copystat(s, d)
        tally.folders += 1
    elif os.path.isfile(s):  # follows a link: its target's bytes and mode
        if where == "config.json" and write_config is not None:
            write_config(s, d)
            shutil.copymode(s, d)
        else:
            shutil.copy2(s, d)
        tally.files += 1
    else:
        tally.left.append(f"{where} (not a regular file)")  # a FIFO or device is never opened
