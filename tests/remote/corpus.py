"""N tiny mixed checkpoints built in code for the batch tests and benchmarks: safetensors, torch zip .pt,
legacy .pt, a sharded safetensors index, a DCP folder, a GGUF file, pickles that would run code (a canary
command) or need trust, truncated files and Git LFS pointer files. Each kind with the exit code `scan` must
give it. FILE_KINDS leaves out the DCP folder, for servers that have no folders (HTTP URL lists)."""

from __future__ import annotations

import io
import json
import shlex
import struct
import warnings
from pathlib import Path

LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")
FILE_KINDS = ("safetensors", "pt", "legacy", "sharded", "payload", "trust", "truncated", "lfs", "gguf")
KINDS = (*FILE_KINDS, "dcp")
# scan's exit code per kind: 0 safe, 1 needs trust, 2 unreadable, 3 would run code
EXIT = {"safetensors": 0, "pt": 0, "legacy": 0, "sharded": 0, "payload": 3, "trust": 1, "truncated": 2, "lfs": 2,
        "gguf": 0, "dcp": 0}


def safetensors_bytes(n: int, seed: int, first: int = 0) -> bytes:
    header = {f"layer{first + i}.weight": {"dtype": "F32", "shape": [2], "data_offsets": [i * 8, i * 8 + 8]}
              for i in range(n)}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + struct.pack(f"<{2 * n}f", *[float(seed + i) for i in range(2 * n)])


class TrainingConfig:
    """A class of the project that saved the checkpoint: outside the weights-only allowlist (needs trust)."""


def _pt(seed: int, legacy: bool = False, custom: bool = False) -> bytes:
    import torch

    buf = io.BytesIO()
    state: dict[str, object] = {"w": torch.full((2, 2), float(seed)), "b": torch.zeros(2)}
    if custom:
        state["config"] = TrainingConfig()
    torch.save(state, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def payload(canary: Path) -> bytes:
    """A pickle whose loading runs `touch CANARY` (never loaded by the tests: the canary must stay absent)."""
    return b"\x80\x02cos\nsystem\n(X" + _utf8(f"touch {shlex.quote(str(canary))}") + b"tR."


def _utf8(s: str) -> bytes:
    data = s.encode()
    return struct.pack("<I", len(data)) + data


def _dcp(folder: Path, seed: int) -> None:
    import torch
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # torch's notice that no_dist is deprecated
        warnings.simplefilter("ignore")
        dcp.save({"w": torch.full((2, 2), float(seed)), "b": torch.zeros(2)}, checkpoint_id=str(folder), no_dist=True)


def _gguf(seed: int) -> bytes:
    """By hand (the header bytes gguf_files.raw_gguf lays out): the batch tests run without gguf-py."""
    from tests.gguf_files import kv, raw_gguf, s, tinfo

    values = struct.pack("<8f", *[float(seed + i) for i in range(8)])
    return raw_gguf([kv("general.architecture", 8, s("llama"))], [tinfo("blk.0.attn_q.weight", (4, 2), 0, 0)], values)


def make_corpus(root: Path, n: int, canary: Path, kinds: tuple[str, ...] = KINDS) -> list[tuple[str, str]]:
    """`n` checkpoints under root: [(relative name of the input, kind)]."""
    out: list[tuple[str, str]] = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        folder = root / f"d{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"d{i % 7}/m{i:05d}"
        if kind == "safetensors":
            (root / f"{name}.safetensors").write_bytes(safetensors_bytes(2 + i % 3, i))
            out.append((f"{name}.safetensors", kind))
        elif kind in ("pt", "legacy"):
            (root / f"{name}.pt").write_bytes(_pt(i, legacy=kind == "legacy"))
            out.append((f"{name}.pt", kind))
        elif kind == "sharded":
            weight_map = {}
            for k in (0, 1):
                shard = f"m{i:05d}-{k + 1:05d}-of-00002.safetensors"
                (folder / shard).write_bytes(safetensors_bytes(1, i, first=k))
                weight_map[f"layer{k}.weight"] = shard
            (root / f"{name}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
            out.append((f"{name}.safetensors.index.json", kind))
        elif kind == "payload":
            (root / f"{name}.pt").write_bytes(payload(canary))
            out.append((f"{name}.pt", kind))
        elif kind == "trust":
            (root / f"{name}.pt").write_bytes(_pt(i, custom=True))
            out.append((f"{name}.pt", kind))
        elif kind == "gguf":
            (root / f"{name}.gguf").write_bytes(_gguf(i))
            out.append((f"{name}.gguf", kind))
        elif kind == "dcp":
            _dcp(root / name, i)
            out.append((name, kind))
        elif kind == "truncated":
            (root / f"{name}.safetensors").write_bytes(safetensors_bytes(4, i)[:-9])
            out.append((f"{name}.safetensors", kind))
        else:
            (root / f"{name}.safetensors").write_bytes(LFS_POINTER)
            out.append((f"{name}.safetensors", kind))
    return out
