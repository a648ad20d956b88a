"""GGUF's closed tables, held here so a metadata read never imports gguf-py (~0.2 s): the GGML tensor
types (id -> name, values per block, bytes per block), the metadata value types, the file types of
`general.file_type`. tests/unit/test_gguf_types.py checks every row against gguf-py's own tables;
an id this table lacks (a type newer than it) is looked up in gguf-py when that is installed."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True)
class GgmlType:
    """One GGML tensor type: `block` values are stored in `type_size` bytes."""

    id: int
    name: str
    block: int
    type_size: int

    @property
    def quantized(self) -> bool:
        return self.name not in PLAIN

    def nbytes(self, numel: int) -> int:
        return numel // self.block * self.type_size

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block


_ROWS: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}
GGML_TYPES: dict[int, GgmlType] = {i: GgmlType(i, *row) for i, row in _ROWS.items()}

# The unquantized types, as torch names them: their values are read in place like any dense tensor.
PLAIN: dict[str, str] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                         "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}


def ggml_type(type_id: int) -> GgmlType | None:
    """The type of an id: this table, else gguf-py's (a type added after this table was written)."""
    known = GGML_TYPES.get(type_id)
    if known is not None:
        return known
    try:
        import gguf
    except ImportError:
        return None
    try:
        t = gguf.GGMLQuantizationType(type_id)
        block, size = gguf.GGML_QUANT_SIZES[t]
    except (ValueError, KeyError):
        return None
    return GgmlType(type_id, t.name, int(block), int(size))


def by_name(name: str) -> GgmlType | None:
    return next((t for t in GGML_TYPES.values() if t.name == name), None)


def dtype_of(text: str) -> str | None:
    """The dtype a GGUF tensor of GGML type `text` has in statecli: the type name for block types
    (Q4_K), the torch dtype for plain ones (F32 -> float32); None for no GGML type."""
    t = by_name(text.upper())
    return None if t is None else PLAIN.get(t.name, t.name)


class ValueType(IntEnum):
    """GGUF metadata value types (the spec's gguf_metadata_value_type)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct codes of the fixed-size value types (little-endian prefix added by the reader).
SCALAR_CODES: dict[ValueType, str] = {
    ValueType.UINT8: "B", ValueType.INT8: "b", ValueType.UINT16: "H", ValueType.INT16: "h",
    ValueType.UINT32: "I", ValueType.INT32: "i", ValueType.FLOAT32: "f", ValueType.BOOL: "?",
    ValueType.UINT64: "Q", ValueType.INT64: "q", ValueType.FLOAT64: "d",
}

# general.file_type: llama.cpp's llama_ftype ("MOSTLY_" dropped, as llama.cpp prints it).
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 1024: "GUESSED",
}

# Tensors runtimes compute from hyperparameters rather than train (gguf's MODEL_TENSOR.ROPE_*).
COMPUTED = frozenset({"rope_freqs", "rope_factors_long", "rope_factors_short"})

__all__ = ["COMPUTED", "FILE_TYPES", "GGML_TYPES", "PLAIN", "SCALAR_CODES", "GgmlType", "ValueType", "by_name",
           "dtype_of", "ggml_type"]
