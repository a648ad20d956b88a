"""Files under 1 MB that ask for unbounded work (issue 19, items 6 and 7): compression bombs in every
place a zip member is inflated, thousands of members, pickles whose few bytes declare huge lengths or
memo slots, JSON nested past any recursion limit, ints past Python's int-to-string limit, and shard
indexes that name the wrong things. Each builder returns the file's path."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.pickle_bytes import torch_zip_bytes, zip_members

_ZERO_MIB = bytes(1 << 20)
_DATE = (2024, 1, 1, 0, 0, 0)


def _info(name: str, method: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, _DATE)
    info.compress_type = method
    return info


def _stream_member(zf: zipfile.ZipFile, name: str, head: bytes, mib: int, method: int) -> None:
    """`head` then `mib` MiB of zeros, compressed as written (the whole is never held in memory)."""
    with zf.open(_info(name, method), "w", force_zip64=True) as w:
        w.write(head)
        for _ in range(mib):
            w.write(_ZERO_MIB)


def _torch_zip(extra: Callable[[zipfile.ZipFile], None], bomb_pkl: int = 0, method: int = zipfile.ZIP_DEFLATED,
               obj: object | None = None) -> bytes:
    """A real torch.save archive rewritten member by member, data.pkl inflating past `bomb_pkl` MiB
    when asked, then `extra` adds members."""
    members = zip_members(torch_zip_bytes(obj if obj is not None else {"w": torch.ones(3)}))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            if bomb_pkl and name.endswith("/data.pkl"):
                _stream_member(zf, name, data, bomb_pkl, method)
            else:
                zf.writestr(_info(name, zipfile.ZIP_STORED), data)
        extra(zf)
    return buf.getvalue()


def pkl_bomb(mib: int = 512, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """data.pkl (a real pickle, then zeros after its STOP) inflating to `mib` MiB from ~mib KB."""
    return _torch_zip(lambda zf: None, bomb_pkl=mib, method=method)


def extra_member_bomb(mib: int = 900, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    return _torch_zip(lambda zf: _stream_member(zf, "archive/extra.bin", b"", mib, method))


def many_members(n: int = 9000) -> bytes:
    def add(zf: zipfile.ZipFile) -> None:
        for i in range(n):
            zf.writestr(_info(f"archive/e{i}", zipfile.ZIP_STORED), b"")

    return _torch_zip(add)


def nested_zip_bomb(mib: int = 256) -> bytes:
    """A pickle string holding a zip whose one member is a deflate bomb (torch.storage._load_from_bytes
    shape), as an extra member torch never reads: scanned as a nested archive."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        _stream_member(zf, "inner/data.pkl", b"\x80\x02}q\x00.", mib, zipfile.ZIP_DEFLATED)
    blob = inner.getvalue()
    pickle_bytes = b"\x80\x03B" + struct.pack("<I", len(blob)) + blob + b"."
    return _torch_zip(lambda zf: zf.writestr(_info("archive/extra.pkl", zipfile.ZIP_STORED), pickle_bytes))


def legacy_pickle(body: bytes) -> bytes:
    """A bare protocol-2 pickle stream (what a legacy .pt starts with) holding `body`."""
    return b"\x80\x02" + body


HUGE_LENGTHS = {
    # BINUNICODE / BINBYTES declaring 4 GiB, BINBYTES8 / BINUNICODE8 declaring 2**62, on a few bytes.
    "binunicode": b"X" + struct.pack("<I", 0xFFFFFFF0) + b"abc",
    "binbytes": b"B" + struct.pack("<I", 0xFFFFFFF0) + b"abc",
    "binbytes8": b"\x8e" + struct.pack("<Q", 1 << 62) + b"abc",
    "binunicode8": b"\x8d" + struct.pack("<Q", 1 << 62) + b"abc",
    "long4": b"\x8b" + struct.pack("<i", 0x7FFFFFF0) + b"abc",
    # One memo slot far out: the C unpickler grows its memo table to the index.
    "memo_far": b"N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b".",
    "memo_many": b"N" + b"".join(b"r" + struct.pack("<I", i * 4099) for i in range(20000)) + b".",
}


def deep_json_safetensors(depth: int = 400_000) -> bytes:
    header = b'{"__metadata__":{"a":' + b"[" * depth + b"]" * depth + b"}}"
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header


def big_int_state_dict(digits: int = 5001) -> dict[str, object]:
    return {"w": torch.ones(2), "big": 10 ** (digits - 1), "nested": {"k": [-(10 ** (digits - 1))]},
            "keyed": {10 ** (digits - 1): 1}}


def write_index(folder: Path, weight_map: dict[str, str]) -> Path:
    """A sharded index beside one real safetensors shard, `model.safetensors`."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.ones(2)}, str(folder / "model.safetensors"))
    p = folder / "model.safetensors.index.json"
    p.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return p


def _s(x: str) -> bytes:
    return b"X" + struct.pack("<I", len(x)) + x.encode()


# data.pkl bodies (a dict {'a': ...}) that build ~1M objects or references from under 1 MB by repetition.
REPETITIONS = {
    "binget": b"\x80\x02}" + _s("a") + b"]q\x00(" + b"h\x00" * 450_000 + b"e" + b"s.",
    "dup": b"\x80\x02}" + _s("a") + b"](N" + b"2" * 900_000 + b"e" + b"s.",
    "empty-lists": b"\x80\x02}" + _s("a") + b"](" + b"]" * 900_000 + b"e" + b"s.",
    "one-item-lists": b"\x80\x02}" + _s("a") + b"](" + b"]K\x01a" * 220_000 + b"e" + b"s.",
    "deep-tuples": b"\x80\x02}" + _s("a") + b"(" * 300_000 + b")" + b"t" * 300_000 + b"s.",
}
