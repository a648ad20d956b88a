"""Bounded work on hostile input, one home for each bound: the JSON loader every checkpoint JSON goes
through (nesting depth checked on the bytes before json.loads recurses), bounded inflation of
compressed members (a running cap on size and ratio, never the declared size), and the text of an
int past Python's int-to-string limit (str() of it raises)."""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable
from typing import Any

# Checkpoint JSON (safetensors headers, index.json, config.json) nests 3-6 levels; json's C scanner
# recurses once per level and hits RecursionError near 1,000 levels (a 400 KB header reaches 400k).
MAX_JSON_DEPTH = 128
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"[\[{][\]}]")

# A compressed member is inflated at most to MAX_INFLATED bytes and at most MAX_RATIO times its
# compressed size (past a floor for tiny members): deflate reaches ~1,000x on repetitive bytes, real
# pickles and text 3-10x. torch.save stores every member uncompressed, so only hand-made zips meet this.
MAX_INFLATED = 64 << 20
MAX_RATIO = 100
_RATIO_FLOOR = 64 << 10
_CHUNK = 1 << 20

# CPython refuses str() of an int with more digits than this (sys.get_int_max_str_digits default).
_MAX_DIGITS = 4300
_MAX_BITS = int(_MAX_DIGITS * math.log2(10)) - 8


class TooDeep(ValueError):
    """JSON nested past MAX_JSON_DEPTH (a ValueError, so every JSON caller's handler reports it)."""


class Inflation(ValueError):
    """A compressed member would inflate past its cap: `limit` bytes were produced before stopping."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


def json_depth_ok(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `data` nests brackets at most `limit` deep, found at C speed: strings dropped, then
    innermost bracket pairs removed once per level (a valid document of depth d empties in d rounds)."""
    skeleton = _NOT_BRACKET.sub(b"", _STRING.sub(b"", data))
    for _ in range(limit):
        if not skeleton:
            return True
        shorter = _INNERMOST.sub(b"", skeleton)
        if len(shorter) == len(skeleton):
            return True  # unbalanced: json.loads reports it, after at most this many levels
        skeleton = shorter
    return not skeleton


def load_json(data: bytes | str, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """json.loads with the nesting depth checked first. Raises ValueError (TooDeep, JSONDecodeError,
    UnicodeDecodeError) on bad input, never RecursionError."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if not json_depth_ok(raw):
        raise TooDeep(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    text = data if isinstance(data, str) else raw.decode("utf-8")
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except RecursionError as exc:  # not reachable within MAX_JSON_DEPTH; kept as a ValueError if it is
        raise TooDeep(f"JSON nested too deeply: {exc}") from exc


def inflate_limit(compressed: int, budget: int = MAX_INFLATED) -> int:
    """The most bytes a member of `compressed` bytes may inflate to (`budget`: what an archive has left)."""
    return min(MAX_INFLATED, budget, max(_RATIO_FLOOR, MAX_RATIO * compressed))


def inflate(raw: bytes, declared: int, cap: int | None = None, what: str = "member",
            budget: int = MAX_INFLATED) -> bytes:
    """Inflate raw deflate bytes up to min(`declared`, `cap`) bytes, in chunks with a running check:
    past inflate_limit (size, ratio, the archive's `budget`) it raises Inflation, whatever the
    member declares. The result may be shorter than wanted (the caller checks)."""
    want = declared if cap is None else min(cap, declared)
    limit = inflate_limit(len(raw), budget)
    if want > limit:  # declared past the cap: refused before inflating a byte
        raise Inflation(f"{what} declares {declared:,} bytes from {len(raw):,} compressed, past the "
                        f"{limit:,}-byte cap (a compression bomb, not read)", limit)
    d = zlib.decompressobj(-15)
    parts: list[bytes] = []
    got = 0
    pending = raw
    while got < want:
        chunk = d.decompress(pending, min(_CHUNK, want - got))
        pending = d.unconsumed_tail
        if not chunk:
            break
        got += len(chunk)
        if got > limit:
            raise Inflation(f"{what} inflates past {limit:,} bytes (from {len(raw):,} compressed; a "
                            f"compression bomb, not read further)", limit)
        parts.append(chunk)
    return b"".join(parts)


def int_text(v: int) -> str | None:
    """The rendering of an int str() cannot print ('<int of 5001 digits>'), else None."""
    if -(1 << _MAX_BITS) < v < (1 << _MAX_BITS):
        return None
    return f"<int of {int(math.log10(abs(v))) + 1} digits>"


def safe_str(v: Any) -> str:
    """str(v), with an int too long for str() (a dict key, a name part) rendered by int_text."""
    if isinstance(v, int):
        text = int_text(v)
        if text is not None:
            return text
    return str(v)


def read_zip_member(zf: Any, info: Any, what: str, budget: int = MAX_INFLATED) -> bytes:
    """A zipfile member (any method zipfile inflates: deflate, bzip2, lzma) read under the same cap:
    zipfile stops at the declared size, so the declared size is checked against inflate_limit first."""
    limit = info.file_size if info.compress_type == 0 else inflate_limit(info.compress_size, budget)
    if info.file_size > limit:
        raise Inflation(f"{what} declares {info.file_size:,} bytes from {info.compress_size:,} compressed, past "
                        f"the {limit:,}-byte cap (a compression bomb, not read)", limit)
    with zf.open(info) as member:
        data: bytes = member.read(info.file_size)
    return data


MAX_JSON_FILE = 256 << 20


def read_json_file(path: str, max_bytes: int = MAX_JSON_FILE) -> Any:
    """A JSON file from a checkpoint folder (config.json, an index) through load_json, size-capped.
    Raises OSError or ValueError."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"JSON file larger than {max_bytes:,} bytes")
    return load_json(data)
