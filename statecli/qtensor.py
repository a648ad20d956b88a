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
    """

    scheme: str
    method: str
    compute_dtype: str = "float32"
    parts: tuple[tuple[str, str], ...] = ()
    group_size: int | None = None
    block: tuple[int, ...] | None = None
    inferred: bool = False

    def bits_per_weight(self, stored_nbytes: int, numel: int) -> float | None:
        """Stored bits (scales and zeros included) per logical value."""
        return stored_nbytes * 8 / numel if numel else None


def dequantized_by(reader: object, info: object) -> bool:
    """Whether a format's value reader (its `values` hook) gives this quantized tensor's values
    dequantized: then stats, show, check and diff read it as float32 like a dense tensor."""
    fn = getattr(reader, "dequantizes", None)
    return fn is not None and bool(fn(info))


__all__ = ["QuantInfo", "dequantized_by"]
