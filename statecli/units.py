"""Names and numbers shared by every command: dtype names and aliases, byte/count/shape formatting,
size parsing. One table each, so `cast --dtype half` and `check --param-dtypes half` agree."""

from __future__ import annotations

import math
import re
from typing import Any

# itemsize in bytes for every dtype torch can save (torch names). Sub-byte packed dtypes
# (quint4x2, float4_e2m1fn_x2, bits*) are stored as whole bytes per element in torch.
ITEMSIZE: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "float8_e4m3fn": 1, "float8_e4m3fnuz": 1, "float8_e5m2": 1, "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1,
    "complex128": 16, "complex64": 8, "complex32": 4,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1,
    "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1,
    "int1": 1, "int2": 1, "int3": 1, "int4": 1, "int5": 1, "int6": 1, "int7": 1,
    "uint1": 1, "uint2": 1, "uint3": 1, "uint4": 1, "uint5": 1, "uint6": 1, "uint7": 1,
    "bool": 1,
    "qint8": 1, "quint8": 1, "qint32": 4, "quint4x2": 1, "quint2x4": 1,
    "bits8": 1, "bits16": 2, "bits1x8": 1, "bits2x4": 1, "bits4x2": 1,
}

FLOATING = {
    "float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz",
    "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
}
COMPLEX = {"complex128", "complex64", "complex32"}

# What a user may type for a dtype -> torch's name. Every torch name is accepted as itself.
DTYPE_ALIASES: dict[str, str] = {
    "half": "float16", "fp16": "float16", "f16": "float16", "bf16": "bfloat16",
    "float": "float32", "fp32": "float32", "f32": "float32", "double": "float64", "fp64": "float64", "f64": "float64",
    "long": "int64", "int": "int32", "short": "int16", "byte": "uint8", "char": "int8",
    "cfloat": "complex64", "cdouble": "complex128", "chalf": "complex32",
    "fp8": "float8_e4m3fn", "e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2",
}
# What `cast` writes: floating dtypes with a kernel on every torch build.
CAST_TARGETS = ("float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2")


def dtype_name(text: str) -> str | None:
    """torch's name for a dtype a user typed ('half', 'torch.float16', 'BF16'), or None."""
    t = text.strip().lower().removeprefix("torch.")
    if t in ITEMSIZE:
        return t
    return DTYPE_ALIASES.get(t)


def itemsize(dtype: str) -> int:
    return ITEMSIZE.get(dtype, 1)


def is_floating(dtype: str) -> bool:
    return dtype in FLOATING


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def fmt_count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return str(n)


def fmt_shape(shape: tuple[int, ...] | list[int] | None) -> str:
    if shape is None:
        return "-"
    return "[" + ", ".join(str(s) for s in shape) + "]"


_SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
               "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def parse_size(text: str) -> int | None:
    """Bytes for '5GB', '500MiB', '2.5G' or '1024'; None when `text` is not a size (the caller names
    the option in its error)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?)B?\s*", text, re.IGNORECASE)
    if not m:
        return None
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 tensor', '2 tensors' ('1 entry', '3 entries' with `many`)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def non_finite_str(v: Any) -> Any:
    """The one JSON convention for non-finite numbers (JSON has none): NaN, Inf and -Inf are the strings
    "nan", "inf" and "-inf"; every other value is itself. Every JSON output follows it (render/machine.py
    applies it to whatever a result hands over); docs/commands.md documents it."""
    if isinstance(v, float) and (v != v or v in (math.inf, -math.inf)):
        return str(v)
    return v
