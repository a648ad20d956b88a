"""Object-graph blow-ups built in code: tiny torch archives whose pickle memo shares one container by
billions of paths, refers to itself, or nests deeper than any recursive walker can follow."""

from __future__ import annotations

import pickletools
import struct
from pathlib import Path

import torch

from benchmarks.pickle_bytes import replace_member, torch_zip_bytes, zip_members

EMPTY_LIST, EMPTY_DICT, MARK, APPEND, APPENDS, SETITEM, POP, STOP = b"]", b"}", b"(", b"a", b"e", b"s", b"0", b"."


def _binunicode(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s)) + s.encode()


def _put(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)  # LONG_BINPUT


def _get(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)  # LONG_BINGET


def shared_list_pickle(levels: int = 9, fanout: int = 9) -> bytes:
    """{'a': L9} where L0 = [] and each L(k) holds `fanout` references to L(k-1): 9**9 paths, 10 lists.
    Only opcodes torch's weights-only unpickler accepts (no POP): L(k-1) is built inside L(k)'s MARK."""
    body = EMPTY_LIST + _put(0)
    for k in range(1, levels + 1):
        body = EMPTY_LIST + _put(k) + MARK + body + _get(k - 1) * (fanout - 1) + APPENDS
    return b"\x80\x02" + EMPTY_DICT + _binunicode("a") + body + SETITEM + STOP


def shared_list_zip(levels: int = 9, fanout: int = 9) -> bytes:
    """The shared-list pickle as the data.pkl of a torch archive (no tensor records)."""
    return replace_member(torch_zip_bytes({}), "/data.pkl", shared_list_pickle(levels, fanout))


def shared_dict_with_tensor(levels: int = 9, fanout: int = 9) -> dict[str, object]:
    """{'w': t, 'a': D9}: D0 = {'t': tensor}, D(k) maps '0'..'8' to D(k-1) (torch.save keeps the sharing)."""
    x: dict[str, object] = {"t": torch.zeros(2)}
    for _ in range(levels):
        x = {str(i): x for i in range(fanout)}
    return {"w": torch.ones(3), "a": x}


def self_dict() -> dict[str, object]:
    d: dict[str, object] = {"w": torch.ones(3)}
    d["self"] = d
    return d


def self_list_meta() -> dict[str, object]:
    meta: list[object] = [1]
    meta.append(meta)
    return {"w": torch.ones(3), "meta": meta}


def deep_nest_zip(depth: int = 50_000, tensor_at_bottom: bool = True) -> bytes:
    """{'w': t, 'deep': [[[...[t]...]]]} nested `depth` lists deep (the C unpickler is not recursive;
    torch.save itself could not write it). Spliced into a real data.pkl before its last SETITEMS."""
    real = torch_zip_bytes({"w": torch.ones(3), "n": 0})  # two items: SETITEMS, which a pair can join
    pkl = next(d for n, d in zip_members(real) if n.endswith("/data.pkl"))
    ops = list(pickletools.genops(pkl))
    tensor_memo = next(ops[i + 1][1] for i, (op, _, _) in enumerate(ops) if op.name == "REDUCE")
    setitems = max(pos for op, _, pos in ops if op.name == "SETITEMS")
    bottom = _get(int(tensor_memo)) if tensor_at_bottom else b"K\x01"
    deep = _binunicode("deep") + EMPTY_LIST * depth + bottom + APPEND * depth
    return replace_member(real, "/data.pkl", pkl[:setitems] + deep + pkl[setitems:])


def write_cases(folder: Path) -> dict[str, Path]:
    """Every blow-up case under `folder`, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in (("shared-list", shared_list_zip()), ("deep-nest", deep_nest_zip())):
        out[name] = folder / f"{name}.pt"
        out[name].write_bytes(data)
    for name, obj in (("shared-dict-tensor", shared_dict_with_tensor()), ("self-dict", self_dict()),
                      ("self-list", self_list_meta())):
        out[name] = folder / f"{name}.pt"
        torch.save(obj, out[name])
    return out
