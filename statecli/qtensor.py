"""The one model of a quantized tensor, shared by every format that stores weights packed or
block-scaled (GGUF's GGML types, GPTQ/AWQ, compressed-tensors, bitsandbytes, FP8 block scales,
MXFP4, torchao subclasses). Plain data, no numpy: readers fill it, analyses count with it, and the
value readers (formats' `values` hooks) dequantize from it.

A quantized weight is one logical TensorInfo:
- `dtype` is the logical storage type as users name it ("int4", "nf4", "fp8_e4m3", "Q4_K"), never a
  torch dtype the code might try to cast;
- `shape` is the logical shape (what the dequantized tensor has, in torch order);
- `layout` is Layout.QUANTIZED; `stored_nbytes` counts every stored byte of it (packed values,
  scales, zeros, indices), so sizes stay right;
- `quant` is a QuantInfo saying how it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GGUF_METHOD = "gguf"  # QuantInfo.method of a tensor read from a GGUF file (its values live in the GGUF blob)


@dataclass(frozen=True)
class QuantInfo:
    """How one logical tensor is stored.

    scheme: the family and its settings as shown ("GGUF Q4_K", "GPTQ int4 asym, group 128, act-order").
    method: the quantization method's id as configs spell it ("gguf", "gptq", "awq",
        "compressed-tensors", "bitsandbytes", "fp8", "mxfp4", "torchao").
    compute_dtype: the dtype the dequantized values have (torch name: "float16", "bfloat16", "float32").
    parts: the storage entries holding it, as (role, entry name) pairs ("qweight", "x.qweight"); empty
        where the format stores one blob (a GGUF tensor).
    group_size / block: the scale granularity, where it has one.
    inferred: True where the scheme came from names, dtypes and shapes rather than a config.
    bits: the bits of one stored code (4 for int4/nf4/mxfp4, 8 for int8/fp8), where it has one.
    codec: which dequantizer reads it (formats/quant/dequant.py's table; "" where `method` says).
    tensors: the parts' own TensorInfos, in `parts` order (typed loosely: state.TensorInfo sits above
        this module), so a value reader finds their bytes without the entries that held them.
    settings: codec settings as (name, value) pairs (a zero-point offset, a packing order; "inline":
        the parts live inside one pickled object, not as entries of the file, as torchao's subclasses).
    """

    scheme: str
    method: str
    compute_dtype: str = "float32"
    parts: tuple[tuple[str, str], ...] = ()
    group_size: int | None = None
    block: tuple[int, ...] | None = None
    inferred: bool = False
    bits: int | None = None
    codec: str = ""
    tensors: tuple[Any, ...] = ()
    settings: tuple[tuple[str, Any], ...] = ()

    def to_dict(self, stored_nbytes: int, numel: int) -> dict[str, Any]:
        """The scheme and its stored parts as JSON (each part's dtype, shape and bytes as stored)."""
        bpw = self.bits_per_weight(stored_nbytes, numel)
        return {"scheme": self.scheme, "method": self.method, "inferred": self.inferred, "bits": self.bits,
                "group_size": self.group_size, "block": list(self.block) if self.block else None,
                "compute_dtype": self.compute_dtype, "stored_nbytes": stored_nbytes,
                "bits_per_weight": round(bpw, 4) if bpw is not None else None,
                "parts": [{"role": role, "name": name, "dtype": getattr(t, "dtype", None),
                           "shape": list(getattr(t, "shape", ())), "nbytes": getattr(t, "nbytes", None)}
                          for (role, name), t in zip(self.parts, self.tensors or [None] * len(self.parts))]}

    def setting(self, name: str, default: Any = None) -> Any:
        return dict(self.settings).get(name, default)

    def bits_per_weight(self, stored_nbytes: int, numel: int) -> float | None:
        """Stored bits (scales and zeros included) per logical value."""
        return bits_per_weight(stored_nbytes, numel)


def bits_per_weight(nbytes: int, numel: int) -> float | None:
    """Stored bits per logical value (None without values): the one formula every view prints."""
    return nbytes * 8 / numel if numel else None


@dataclass(frozen=True)
class BitsRow:
    """One row of bits per weight, for quantized checkpoints (analyses/quantized.py: by scheme, by
    module, quantized weights, all parameters) and GGUF (analyses/gguf_view.py: by GGML type, by
    block, total): tensors, logical values, stored bytes; `types`: the GGML types a GGUF block holds."""

    key: str
    tensors: int
    numel: int
    nbytes: int
    types: tuple[str, ...] = ()

    @property
    def bits_per_weight(self) -> float | None:
        return bits_per_weight(self.nbytes, self.numel)

    def to_dict(self, count: str = "numel", digits: int | None = 4) -> dict[str, Any]:
        """JSON of the row: the values' count under `count` ("params" in GGUF's output) and bits per
        weight rounded to `digits` (None: unrounded, as GGUF's output has it); `types` where it has any."""
        bpw = self.bits_per_weight
        d: dict[str, Any] = {"tensors": self.tensors, count: self.numel, "nbytes": self.nbytes,
                             "bits_per_weight": round(bpw, digits) if bpw is not None and digits is not None else bpw}
        if self.types:
            d["types"] = list(self.types)
        return d


# Logical type names of the quantized weights formats/quant builds (check --param-dtypes accepts them
# beside torch dtypes); a format with its own types (GGUF's GGML names) adds them here.
LOGICAL_DTYPES: set[str] = {"int2", "int4", "int8", "nf4", "fp4", "fp8_e4m3", "fp8_e5m2", "mxfp4", "nvfp4"}


def dequantized_by(reader: object, info: object) -> bool:
    """Whether a format's value reader (its `values` hook) gives this quantized tensor's values
    dequantized: then stats, show, check and diff read it as float32 like a dense tensor."""
    fn = getattr(reader, "dequantizes", None)
    return fn is not None and bool(fn(info))


__all__ = ["LOGICAL_DTYPES", "BitsRow", "QuantInfo", "bits_per_weight", "dequantized_by"]
