"""What a batch run reads: paths, folders (walked: each checkpoint below once, a sharded or DCP checkpoint
as one), shell-style globs over local folders and over fsspec URLs (s3://bucket/models/**/*.safetensors),
and lists of inputs (`--from-list FILE`, `-` for stdin); then this CI job's shard of them."""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import BadInput, UsageError
from ..formats import _WALKED as CHECKPOINT_SUFFIXES
from ..formats import expand_paths
from ..io.urls import is_remote

__all__ = ["Input", "expand_inputs", "parse_shard", "read_list", "shard_of"]

_GLOB = frozenset("*?[")


@dataclass(frozen=True)
class Input:
    """One checkpoint to read; `info` is what a remote listing already said about it (size, ETag...),
    so its identity costs no request of its own."""

    name: str
    info: Mapping[str, Any] | None = field(default=None, compare=False)


def read_list(source: str, stdin: IO[str] | None = None) -> list[str]:
    """The inputs a list file names, one a line ('#' starts a comment); `-` reads standard input."""
    import sys

    try:
        if source == "-":
            text = (stdin or sys.stdin).read()
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise BadInput(source, f"cannot read the list of inputs: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BadInput(source, "the list of inputs is not UTF-8 text") from exc
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def expand_inputs(args: Iterable[str]) -> list[Input]:
    """Every checkpoint the arguments stand for, each once, in the order given (a glob's or a folder's
    matches sorted)."""
    out: dict[str, Input] = {}
    for arg in args:
        for item in _expand(arg):
            out.setdefault(item.name, item)
    return list(out.values())


def _without_shards(matches: list[Input]) -> list[Input]:
    """A pattern's matches less the shard files a matched sharded index reads: `**/*` over a folder, local or
    in a bucket, matches the index and its shards, and each shard would be read twice, once on its own.
    The index says which files are its shards (one small read; names given one by one are not read, so
    --resume over a list fetches no finished index); an index that cannot say is left alone, its record says why."""
    from ..formats.sharded import read_index, shard_problem

    covered: set[str] = set()
    for name in (m.name for m in matches if m.name.endswith(".index.json")):
        join = posixpath if is_remote(name) else os.path
        try:
            shards = set(read_index(name)[0].values())
        except BadInput:
            continue
        covered |= {join.join(join.dirname(name), s) for s in shards if shard_problem(name, s) is None}
    return [m for m in matches if m.name not in covered]


def _expand(arg: str) -> list[Input]:
    if is_remote(arg):
        return _remote(arg) if _GLOB & set(arg.split("://", 1)[1]) else [Input(p) for p in expand_paths([arg])]
    if not _GLOB & set(arg):
        return [Input(p) for p in expand_paths([arg])]
    found = sorted(glob.glob(arg, recursive=True))
    dcp = _dcp_folders(found, os.path, lambda d: os.path.isfile(os.path.join(d, _dcp_metadata())))
    matches = sorted({*dcp, *(m for m in found if os.path.dirname(m) not in dcp
                              and (os.path.isdir(m) or (os.path.isfile(m) and not _skipped(m))))})
    if not matches:
        raise BadInput(arg, "the pattern matches no checkpoint")
    return _without_shards([Input(p) for p in expand_paths(matches)])


def _dcp_metadata() -> str:
    from ..formats.dcp import METADATA

    return METADATA


def _dcp_folders(names: Sequence[str], join: Any, holds_metadata: Callable[[str], bool]) -> set[str]:
    """The DCP folders a pattern's matches lie in: a matched `.metadata` or `*.distcp` stands for its folder,
    one checkpoint (as a walked folder is), whose files no loader reads on their own."""
    parents = {join.dirname(n) for n in names if join.basename(n) == _dcp_metadata() or n.endswith(".distcp")}
    return {d for d in parents if holds_metadata(d)}


def _remote(pattern: str) -> list[Input]:
    """A glob over a bucket, by one listing (fsspec's glob): each object's size and ETag come with it."""
    from ..io.source import _filesystem

    scheme = pattern.split("://", 1)[0]
    if scheme.lower() in ("http", "https"):
        raise UsageError(pattern, "http(s) has no folders to match a pattern in", "list the URLs (--from-list)")
    fs, path = _filesystem(pattern)
    try:
        found = fs.glob(path, detail=True)
    except Exception as exc:  # noqa: BLE001 - each backend has its own errors
        raise BadInput(pattern, f"listing failed: {type(exc).__name__}: {exc}"[:200]) from None
    files = {p: info for p, info in sorted(found.items()) if info.get("type", "file") == "file"}
    dcp = _dcp_folders(list(files), posixpath, lambda d: posixpath.join(d, _dcp_metadata()) in files
                       or _exists(fs, posixpath.join(d, _dcp_metadata())))  # `**/*.distcp`: one request a folder
    inputs = {f"{scheme}://{d.lstrip('/')}": Input(f"{scheme}://{d.lstrip('/')}") for d in dcp}  # a folder: no info
    inputs |= {f"{scheme}://{p.lstrip('/')}": Input(f"{scheme}://{p.lstrip('/')}", info) for p, info in files.items()
               if posixpath.dirname(p) not in dcp and not _skipped(p)}
    if not inputs:
        raise BadInput(pattern, "the pattern matches no checkpoint")
    return _without_shards([inputs[k] for k in sorted(inputs)])


def _exists(fs: Any, path: str) -> bool:
    try:
        return bool(fs.exists(path))
    except Exception:  # noqa: BLE001 - each backend has its own errors; a folder not known is not a DCP one
        return False


def _skipped(path: str) -> bool:
    """A file a pattern matched that no checkpoint loader reads (a README, a config.json): a broad
    pattern (`**/*`) over a model zoo names checkpoints, not every file beside them."""
    return not path.lower().endswith(CHECKPOINT_SUFFIXES + (".index.json", ".gguf", ".onnx", ".pt2"))


def parse_shard(text: str) -> tuple[int, int]:
    """`i/N`, 1 <= i <= N: this job's share of the inputs (a CI matrix of N jobs)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(None, f"--shard {text!r} is not i/N", "e.g. --shard 1/4 ... --shard 4/4") from None
    if not 1 <= i <= n:
        raise UsageError(None, f"--shard {text}: i must be between 1 and N")
    return i, n


def shard_of(inputs: Sequence[Input], shard: tuple[int, int] | None) -> list[Input]:
    """The inputs of shard i of N, by a hash of each name: the same file lands in the same shard whatever
    else the list holds, so shards never overlap and an added file moves nothing."""
    if shard is None:
        return list(inputs)
    i, n = shard
    return [x for x in inputs if int(hashlib.sha256(x.name.encode("utf-8", "surrogateescape")).hexdigest()[:12], 16) % n
            == i - 1]
