"""Format detection: one entry point that turns a path into a RawCheckpoint, reading metadata only."""

from __future__ import annotations

import os

from ..errors import BadInput
from ._common import RawCheckpoint, open_regular

__all__ = ["RawCheckpoint", "expand_paths", "read_raw", "resolve_path"]

# File names a single-checkpoint folder is recognised by, best first.
_SINGLE_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "checkpoint.pt")
_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".tar")


def resolve_path(path: str) -> str:
    """A directory becomes its index, DCP folder or single checkpoint file; else BadInput."""
    if not os.path.lexists(path):
        raise BadInput(path, "no such file or directory")
    if not os.path.isdir(path):
        return path
    names = sorted(os.listdir(path))
    if ".metadata" in names:
        return path
    indexes = [n for n in names if n.endswith(".index.json")]
    if len(indexes) == 1:
        return os.path.join(path, indexes[0])
    if len(indexes) > 1:
        pref = [n for n in indexes if n.startswith("model.safetensors")]
        if len(pref) == 1:
            return os.path.join(path, pref[0])
        raise BadInput(path, f"directory holds several indexes ({', '.join(indexes)}); name one")
    for n in _SINGLE_NAMES:
        if n in names:
            return os.path.join(path, n)
    found = [n for n in names if n.endswith(_EXTENSIONS) and os.path.isfile(os.path.join(path, n))]
    if len(found) == 1:
        return os.path.join(path, found[0])
    if found:
        raise BadInput(path, f"directory holds several checkpoints ({', '.join(found[:4])}); name one")
    raise BadInput(path, "directory holds no checkpoint (no *.index.json, .metadata, *.safetensors, *.pt or *.bin)")


def expand_paths(paths: list[str]) -> list[str]:
    """For commands over many checkpoints (check, scan): a folder becomes every checkpoint below it;
    a sharded index or DCP directory counts as one, its shards are not listed again."""
    out: list[str] = []
    for p in paths:
        if not os.path.isdir(p):
            out.append(p)
            continue
        found: list[str] = []
        for root, dirs, files in os.walk(p):
            dirs.sort()
            if ".metadata" in files:
                found.append(root)
                dirs[:] = []
                continue
            shards: set[str] = set()
            for name in sorted(f for f in files if f.endswith(".index.json")):
                found.append(os.path.join(root, name))
                try:
                    from .sharded import read_index

                    shards |= set(read_index(os.path.join(root, name))[0].values())
                except BadInput:
                    pass  # reported when the index itself is checked
            found += [os.path.join(root, f) for f in sorted(files) if f.endswith(_EXTENSIONS) and f not in shards]
        out += found or [p]
    return out


def read_raw(path: str, allow_sharded: bool = True) -> RawCheckpoint:
    """Detect the format of `path` from its bytes (not its name) and read its metadata."""
    from . import dcp, safetensors, sharded, torchlegacy, torchzip

    path = resolve_path(path) if allow_sharded else path
    if os.path.isdir(path):
        return dcp.read(path)
    if allow_sharded and path.endswith(".index.json"):
        return sharded.read(path)
    with open_regular(path) as f:
        head = f.read(512)
    if not head:
        raise BadInput(path, "empty file")
    if torchzip.detect(head):
        return torchzip.read(path)
    if safetensors.detect(head):
        return safetensors.read(path)
    if torchlegacy.detect(head):
        return torchlegacy.read(path)
    if torchlegacy.detect_tar(head):
        raise BadInput(path, "a pre-0.4 tar-format torch file; not supported (load and re-save it with torch)")
    if head.startswith(b"GGUF"):
        raise BadInput(path, "a GGUF file; statecli reads torch.save, safetensors, sharded and DCP checkpoints")
    if head.lstrip()[:1] == b"{":
        raise BadInput(path, "a JSON file, not a checkpoint (an index must be named *.index.json)")
    raise BadInput(path, "unknown format: not a torch.save zip, legacy torch file, safetensors or index")
