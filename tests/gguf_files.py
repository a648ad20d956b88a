"""GGUF files for the tests, written by gguf-py's own GGUFWriter (the real layout), with tensors
quantized by gguf.quants.quantize where it supports the type and valid random blocks otherwise."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np


def quantized(values: np.ndarray, type_name: str, seed: int = 0) -> np.ndarray:
    """`values` (float32, last dim a whole number of blocks) stored as `type_name`: quantized by gguf-py,
    or random blocks (bytes below 0x70, so every f16/f32 scale in them is finite) where gguf-py has
    no quantizer for the type."""
    import gguf
    from gguf import GGMLQuantizationType as T

    qt = T[type_name]
    try:
        return gguf.quants.quantize(values.astype(np.float32), qt)
    except NotImplementedError:
        block, size = gguf.GGML_QUANT_SIZES[qt]
        shape = (*values.shape[:-1], values.shape[-1] // block * size)
        return np.random.default_rng(seed).integers(0, 0x70, shape, dtype=np.uint8)


def write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, str]], metadata: dict[str, Any] | None = None,
               arch: str = "llama", split_max_tensors: int = 0, alignment: int | None = None) -> Path:
    """A GGUF with `tensors` ({name: (torch-order float values or plain array, GGML type name)})."""
    import gguf
    from gguf import GGMLQuantizationType as T

    w = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, value in (metadata or {}).items():
        _add(w, key, value)
    for name, (values, type_name) in tensors.items():
        qt = T[type_name]
        if type_name in ("F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"):
            arr = values if type_name != "BF16" else quantized(values, "BF16")
            w.add_tensor(name, arr, raw_dtype=qt if type_name == "BF16" else None)
        else:
            w.add_tensor(name, quantized(values, type_name), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add(w: Any, key: str, value: Any) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value) if value >= 0 else w.add_int32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    else:
        w.add_array(key, list(value))


# -- hand-made headers (hostile cases): the minimum bytes a reader meets -------------------------

def s(text: str | bytes, length: int | None = None) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def tinfo(name: str, dims: tuple[int, ...], type_id: int, offset: int, n_dims: int | None = None) -> bytes:
    nd = len(dims) if n_dims is None else n_dims
    return s(name) + struct.pack(f"<I{len(dims)}QIQ", nd, *dims, type_id, offset)


def raw_gguf(kvs: list[bytes], infos: list[bytes], data: bytes = b"", version: int = 3,
             n_tensors: int | None = None, n_kv: int | None = None, alignment: int = 32) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % alignment) + data
