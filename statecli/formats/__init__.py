"""Format detection: a path becomes its checkpoint (resolve_path), the registry's handler for it
(handler_for), then a RawCheckpoint (read_raw, metadata only) or a scan (scan_path)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import BadInput, NotACheckpoint, NotFound, StatecliError
from ..io.source import listdir
from ..io.urls import hf_cache_path, is_remote, register
from ..state import Format
from ._common import RawCheckpoint, open_regular
from .handler import FormatHandler, record

if TYPE_CHECKING:
    from ..pickle.pickles import Findings

__all__ = ["Format", "FormatHandler", "RawCheckpoint", "detect_format", "expand_paths", "handler_for", "read_raw",
           "refusal", "resolve_path", "scan_file", "scan_path", "sniff"]

# File names a single-checkpoint folder is recognised by, best first.
_SINGLE_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "checkpoint.pt")
_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".tar", ".gguf", ".pt2", ".onnx")
_WALKED = _EXTENSIONS + (".pkl",)  # a folder's files scanned as checkpoints (never its .json/.txt)


def resolve_path(path: str) -> str:
    """A directory becomes its index, DCP folder or single checkpoint file; else BadInput. A URL keeps
    its credentials out of sight (see source.register); `org/repo[@rev]` not on disk is looked up,
    offline, in the local Hugging Face cache."""
    if is_remote(path):
        return _resolve_remote(path)
    if not os.path.lexists(path):
        cached = hf_cache_path(path)
        if cached is None:
            raise NotFound(path, "no such file or directory")
        path = cached
    if not os.path.isdir(path):
        return path
    return _choose(path, sorted(os.listdir(path)), lambda n: os.path.isfile(os.path.join(path, n)))


def _resolve_remote(url: str) -> str:
    url = register(url)
    if url.lower().endswith(_EXTENSIONS + (".json",)):
        return url  # a file by its name: no listing request
    names = listdir(url)
    return url if names is None else _choose(url.rstrip("/"), names, lambda n: True)


def _is_folder(path: str) -> bool:
    if is_remote(path):
        from ..io import remote_values  # noqa: F401 - registers the ranged value reader for this URL's values

        return not path.lower().endswith(_EXTENSIONS + (".json",)) and listdir(path) is not None
    return os.path.isdir(path)


def _choose(path: str, names: list[str], is_file: Callable[[str], bool]) -> str:
    """The checkpoint a folder holding `names` stands for."""
    if ".metadata" in names or any(n.startswith("__") and n.endswith(".metadata") for n in names):
        return path  # a DCP folder (per-rank __N.metadata alone: formats/dcp.py says why it is not read)
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
    found = [n for n in names if n.endswith(_EXTENSIONS) and is_file(n)]
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
        if is_remote(p):  # listed by its display name: credentials stay out of every report
            out.append(register(p))
            continue
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
            found += [os.path.join(root, f) for f in sorted(files) if f.endswith(_WALKED) and f not in shards]
        out += found or [p]
    return out


# What a file that is not a checkpoint looks like, by its first bytes.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"\x1f\x8b", "gzip data"), (b"BZh", "bzip2 data"), (b"\xfd7zXZ", "xz data"),
    (b"7z\xbc\xaf", "a 7z archive"), (b"Rar!", "a RAR archive"), (b"\x7fELF", "an ELF executable"),
    (b"\x89HDF", "an HDF5 file"), (b"\x93NUMPY", "a numpy array"), (b"RIFF", "a RIFF media file"),
    (b"\x28\xb5\x2f\xfd", "zstd data"), (b"PK\x05\x06", "an empty zip archive"),
)


def sniff(head: bytes) -> str:
    """A few words on what a non-checkpoint file looks like ("a PNG image", "text")."""
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:512]):
        return "text"
    from .registry import REGISTRY

    # Named from the registry, so a new format is listed where it is read.
    return f"unknown format: none of {', '.join(sorted({str(h.format) for h in REGISTRY}))}"


def detect_format(path: str, head: bytes) -> Format:
    """The format a file's first bytes announce (a handler with magic bytes); NotACheckpoint
    "not a checkpoint (looks like ...)" otherwise."""
    return _by_head(path, head).format


def refusal(path: str, head: bytes) -> BadInput:
    """What a file that is no checkpoint (and holds no pickle that resolves a global) looks like."""
    if head.lstrip()[:1] == b"{":
        return NotACheckpoint(path, "a JSON file, not a checkpoint (an index must be named *.index.json)")
    return NotACheckpoint(path, f"not a checkpoint (looks like {sniff(head)})")


def handler_for(path: str, allow_sharded: bool = True) -> FormatHandler:
    """The first handler of the registry that claims `path`: those without magic bytes (a DCP folder,
    an index by its name) are asked before a byte is read; then the file's first 512 bytes decide,
    in the loaders' order (torch.load tries zip, then tar, then pickle). `allow_sharded` False: a
    shard is read as a file, never as another index."""
    from .registry import REGISTRY

    name, is_folder = os.path.basename(path), _is_folder(path)
    for h in REGISTRY:
        if not h.magic and (allow_sharded or h.format is not Format.SHARDED) and h.detect(b"", name, is_folder):
            return h
    with open_regular(path) as f:
        head = f.read(512)
    return _by_head(path, head)


def _by_head(path: str, head: bytes) -> FormatHandler:
    from .registry import REGISTRY

    if not head:
        raise BadInput(path, "empty file")
    name = os.path.basename(path)
    for h in REGISTRY:
        if h.magic and h.detect(head, name, False):
            return h
    raise refusal(path, head)


def read_raw(path: str, allow_sharded: bool = True) -> RawCheckpoint:
    """Detect the format of `path` from its layout or bytes (never a file's name alone, except an
    index) and read its metadata."""
    path = resolve_path(path) if allow_sharded else register(path)
    return handler_for(path, allow_sharded).read(path)


def scan_path(path: str, acc: Findings, verify_crc: bool = True) -> Format | None:
    """Scan one checkpoint (file, sharded index or DCP folder) into `acc`: its format, or None when
    not even that could be told (the error is in `acc`). `verify_crc` reads every zip member to
    check its CRC (the whole file); without it only the pickles are read."""
    try:
        target = resolve_path(path)
        return handler_for(target).scan(target, acc, verify_crc)
    except StatecliError as exc:
        record(acc, exc)
        return None


def scan_file(path: str, acc: Findings, verify_crc: bool) -> Format:
    """One file by the format its bytes announce (a DCP item: never a folder or an index)."""
    with open_regular(path) as f:
        head = f.read(512)
    return _by_head(path, head).scan(path, acc, verify_crc)
