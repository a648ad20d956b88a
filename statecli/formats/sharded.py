"""Hugging Face sharded checkpoints: a `*.index.json` weight map over safetensors or .bin shards,
read as one checkpoint."""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import BadInput
from ..io.limits import load_json
from ..io.source import exists
from ..io.urls import is_remote, map_concurrent
from ..pickle.pickles import Findings
from ..state import Format, TensorInfo
from ._common import RawCheckpoint, open_regular
from .handler import BaseHandler, merge

MAX_INDEX = 256 << 20


def read_index(path: str) -> tuple[dict[str, str], dict[str, Any]]:
    with open_regular(path) as f:
        data = f.read(MAX_INDEX + 1)
    if len(data) > MAX_INDEX:
        raise BadInput(path, "index file is larger than 256 MiB")
    try:
        index = load_json(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(path, f"malformed index JSON: {exc}") from exc
    wmap = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wmap.items()):
        raise BadInput(path, "index JSON has no weight_map of tensor name -> shard file")
    meta = index.get("metadata")
    return wmap, meta if isinstance(meta, dict) else {}


def shard_problem(index: str, shard: str) -> str | None:
    """Why a weight map's shard name cannot be a shard file, else None. A weight map is untrusted: a
    shard is a plain file name in the index's folder, never the folder itself ("", "."), a path
    outside it, the index itself or another index (reading would recurse), or a directory."""
    if shard in ("", ".", "..") or os.path.isabs(shard) or "/" in shard or "\\" in shard or "\0" in shard:
        return f"weight_map names shard {shard!r}, which is not a file name in the index's folder"
    if shard == os.path.basename(index) or shard.endswith(".index.json"):
        return f"weight_map names shard {shard!r}, which is an index, not a shard"
    if not is_remote(index) and os.path.isdir(os.path.join(os.path.dirname(index), shard)):
        return f"weight_map names shard {shard!r}, which is a directory"
    return None


def read(path: str) -> RawCheckpoint:
    from . import read_raw  # the shard files are read by their own format readers

    wmap, meta = read_index(path)
    folder = os.path.dirname(path)
    shards = list(dict.fromkeys(wmap.values()))  # in order, once each (a list's `in` was quadratic)
    remote = is_remote(path)
    absent = False
    for shard in shards:
        problem = shard_problem(path, shard)
        if problem:
            raise BadInput(path, problem)
        absent = absent or (not remote and not os.path.isfile(os.path.join(folder, shard)))
    is_st = all(s.endswith(".safetensors") for s in shards)
    raw = RawCheckpoint(path=path, format=Format.SHARDED_SAFETENSORS if is_st else Format.SHARDED_TORCH, root={},
                        metadata={str(k): json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()})
    raw.files.append(path)
    by_shard: dict[str, list[str]] = {}
    for name, shard in wmap.items():
        by_shard.setdefault(shard, []).append(name)
    # Every shard's header is read at once on a thread pool: remote ones for latency, local ones so a
    # cold disk serves all the reads in parallel. A failed one is read again in order below, so the
    # error is the one the sequential reading gives.
    early = map_concurrent(lambda s: read_raw(os.path.join(folder, s), allow_sharded=False), shards) \
        if len(shards) > 1 and not absent else {}  # a shard missing: read in order up to it, no pool
    for shard in shards:
        spath = os.path.join(folder, shard)
        if not exists(spath):
            raise BadInput(path, f"weight_map names shard {shard!r}, which does not exist")
        pre = early.get(shard)
        sub = pre if isinstance(pre, RawCheckpoint) else read_raw(spath, allow_sharded=False)
        raw.files.append(spath)
        raw.globals_seen += [g for g in sub.globals_seen if g not in raw.globals_seen]
        raw.untrusted += [g for g in sub.untrusted if g not in raw.untrusted]
        raw.dangerous += [g for g in sub.dangerous if g not in raw.dangerous]
        raw.warnings += sub.warnings
        tensors = _flat_tensors(sub)
        wanted = set(by_shard[shard])
        missing = [n for n in by_shard[shard] if n not in tensors]
        if missing:
            raise BadInput(spath, f"shard lacks {len(missing)} tensor(s) the index assigns to it, e.g. {missing[0]!r}")
        extra = [n for n in tensors if n not in wanted]
        if extra:
            raw.warnings.append(f"{shard} holds {len(extra)} tensor(s) the index does not list, e.g. {extra[0]!r}")
        for name, info in tensors.items():
            if name in wanted:
                raw.root[name] = info
    return raw


def _flat_tensors(sub: RawCheckpoint) -> dict[str, TensorInfo]:
    from ..pickle.unpickler import TensorRef

    root = sub.root
    if not isinstance(root, dict):
        raise BadInput(sub.path, "shard is not a flat mapping of tensor names to tensors")
    out: dict[str, TensorInfo] = {}
    for k, v in root.items():
        if isinstance(v, (TensorRef, TensorInfo)):
            out[str(k)] = sub.tensor_info(v)
    return out


# -- write side: shard layout and the index (driven by statecli.rewrite) ---------------------------

def shard_layout(safetensors: bool) -> tuple[str, str, str]:
    """(file stem, extension, index file name) as Hugging Face names them."""
    if safetensors:
        return "model", "safetensors", "model.safetensors.index.json"
    return "pytorch_model", "bin", "pytorch_model.bin.index.json"


def shard_name(stem: str, ext: str, i: int, total: int) -> str:
    return f"{stem}-{i:05d}-of-{total:05d}.{ext}"


def split_by_size(sizes: list[int], max_bytes: int) -> list[list[int]]:
    """Indices of `sizes` grouped in order into shards of at most `max_bytes` (a bigger item alone)."""
    groups: list[list[int]] = [[]]
    size = 0
    for i, n in enumerate(sizes):
        if groups[-1] and size + n > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += n
    return groups


def write_index(path: str, weight_map: dict[str, str], total_size: int) -> None:
    from ..io.atomic import open_output

    text = json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=2) + "\n"
    with open_output(path) as f:
        f.write(text.encode("utf-8"))


def scan(path: str, acc: Findings, verify_crc: bool) -> None:
    """Every shard the weight map names, each scanned as the file it is."""
    from . import scan_path

    wmap, _ = read_index(path)
    local, missing = not is_remote(path), []
    folder = os.path.dirname(os.path.abspath(path) if local else path)  # abspath would mangle a URL
    for shard in sorted(set(wmap.values())):
        problem = shard_problem(path, shard)
        if problem:
            acc.problems.append(problem)
            continue
        if local and not os.path.isfile(os.path.join(folder, shard)):
            missing.append(shard)  # one line for all of them: an index may name a million
            continue
        sub = Findings()
        scan_path(os.path.join(folder, shard), sub, verify_crc)
        merge(acc, sub, shard, calls_named=False)
    if missing:
        acc.errors.append(f"weight_map names {len(missing)} shard file(s) that do not exist, e.g. {missing[0]!r}")


class ShardedHandler(BaseHandler):
    """A Hugging Face `*.index.json` over shard files (no magic: named by its name)."""

    format = Format.SHARDED
    magic = False

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return not is_folder and name.endswith(".index.json")

    def read(self, source: str) -> RawCheckpoint:
        return read(source)

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        scan(source, findings, verify_crc)
        return Format.SHARDED


HANDLER = ShardedHandler()
