"""torchao's tensor subclasses in a .pt, read inertly: a wrapper subclass (Int8Tensor, Float8Tensor,
IntxUnpackedToInt8Tensor...) pickles its tensors in its state (qdata, scale, zero_point) and is
rebuilt through torch._utils._rebuild_wrapper_subclass, which statecli's unpickler records without
importing torchao. Where the state holds qdata and a scale, the weight is one logical quantized
tensor whose values are (qdata - zero_point) x scale, each scale covering a block (torchao's
dequantize() for these per-tensor, per-row and per-group layouts); the file's verdict stays
needs-trust (torch.load needs add_safe_globals for these classes), never dangerous.

IntxUnpackedToInt8Tensor is what torchao (0.18) makes for int4 weight-only on CPU
(IntxWeightOnlyConfig(weight_dtype=torch.int4)): one int8 per int4 code, its target_dtype names
the logical type. Int4Tensor's nibble-packed layouts need CUDA kernels to be made and stay as stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...pickle.inert import DtypeValue
from ...pickle.unpickler import TensorRef
from ...qtensor import LOGICAL_DTYPES, QuantInfo
from ...state import TensorInfo
from .config import Method

__all__ = ["torchao_logical"]

_TYPES = {"int8": "int8", "float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}


def _logical_type(state: dict[str, Any], stored: str) -> tuple[str, int] | None:
    """The logical dtype and its bits: the state's target_dtype (torch.int4...) where it names one,
    else the stored dtype's (int8, float8)."""
    target = state.get("target_dtype")
    if isinstance(target, DtypeValue) and target.name.startswith("int") and target.name[3:].isdigit():
        bits = int(target.name[3:])
        return (target.name if target.name in LOGICAL_DTYPES else f"int{bits}"), bits
    dtype = _TYPES.get(stored)
    return (dtype, 8) if dtype is not None else None


def _block(state: dict[str, Any], shape: tuple[int, ...], scale: TensorInfo) -> tuple[int, int] | None:
    """The block one scale covers: the state's block_size where it is a pair, else from the shapes."""
    rows, cols = shape
    bs = state.get("block_size")
    if isinstance(bs, (tuple, list)) and len(bs) == 2 and all(isinstance(b, int) and b > 0 for b in bs):
        br, bc = int(bs[0]), int(bs[1])
    elif scale.numel in (1, rows):
        br, bc = (rows, cols) if scale.numel == 1 else (1, cols)
    else:
        return None
    return (br, bc) if scale.numel == -(-rows // br) * -(-cols // bc) else None


def _granularity(block: tuple[int, int], shape: tuple[int, ...]) -> str:
    if block == tuple(shape):
        return "per-tensor"
    return "per-channel" if block == (1, shape[1]) else f"group {block[1]}" if block[0] == 1 else f"block {block}"


def torchao_logical(name: str, ref: TensorRef, info: Callable[[TensorRef], TensorInfo]) -> TensorInfo | None:
    """The logical tensor of a torchao wrapper subclass `ref` (its parts made TensorInfos by `info`),
    or None where it is not one statecli reads (another class, another layout)."""
    state = ref.subclass_state
    if not (ref.subclass or "").startswith("torchao.") or not state:
        return None
    qdata, scale, zp = state.get("qdata"), state.get("scale"), state.get("zero_point")
    if not isinstance(qdata, TensorRef) or not isinstance(scale, TensorRef) or len(ref.shape) != 2:
        return None
    q, s = info(qdata), info(scale)
    z = info(zp) if isinstance(zp, TensorRef) else None
    logical = _logical_type(state, q.dtype)
    block = _block(state, ref.shape, s)
    if logical is None or block is None or q.shape != ref.shape or (z is not None and z.numel != s.numel):
        return None  # nibble-packed int4 and other layouts stay as stored
    dtype, bits = logical
    cls = (ref.subclass or "").rpartition(".")[2]
    sym = "" if z is None else ", asym"
    parts = [("weight", f"{name}.qdata"), ("weight_scale", f"{name}.scale")]
    tensors = [q, s]
    if z is not None:
        parts.append(("weight_zero_point", f"{name}.zero_point"))
        tensors.append(z)
    quant = QuantInfo(f"torchao {cls} {dtype.replace('_', ' ')}{sym}, {_granularity(block, ref.shape)}",
                      Method.TORCHAO.value, ref.dtype, parts=tuple(parts), tensors=tuple(tensors), block=block,
                      bits=bits, codec="scaled",
                      settings=(("inline", True),))  # the parts live inside the subclass, not as entries
    return TensorInfo(dtype, ref.shape, ref.location, layout="quantized", source=q.source,
                      stored_nbytes=sum(t.storage_size for t in tensors), quant=quant)
