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

import json
from collections.abc import Callable, Mapping
from typing import Any

from ...pickle.inert import DtypeValue
from ...pickle.unpickler import TensorRef
from ...qtensor import LOGICAL_DTYPES, QuantInfo
from ...state import TensorInfo
from .config import Method

__all__ = ["torchao_logical", "torchao_safetensors"]

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
    if not (ref.subclass or "").startswith("torchao.") or not state or len(ref.shape) != 2:
        return None
    parts = {k: info(v) for k, v in state.items() if k in _PARTS and isinstance(v, TensorRef)}
    return _logical(name, (ref.subclass or "").rpartition(".")[2], ref.shape, ref.dtype, state, parts, None)


def torchao_safetensors(tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str]) -> dict[str, TensorInfo]:
    """torchao's safetensors form (torchao.prototype.safetensors' flatten_tensor_state_dict): the
    parts of weight `m.w` stored as `m._w_qdata`, `m._w_scale`... and the header metadata's `m.w`
    a JSON {"_type": class, "_data": attributes}: each such weight as its logical tensor, the
    other entries as they are. Unchanged where the metadata names no torchao tensor."""
    out = dict(tensors)
    for name, text in metadata.items():
        try:
            meta = json.loads(text)
        except ValueError:
            continue
        if not isinstance(meta, dict) or meta.get("_type") in (None, "Tensor") or "." not in name:
            continue
        module, _, attr = name.rpartition(".")
        prefix = f"{module}._{attr}_"
        parts = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and k[len(prefix):] in _PARTS}
        raw_data = meta.get("_data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        state = {k: (DtypeValue(v["_data"]) if isinstance(v, dict) and v.get("_type") == "torch.dtype" else v)
                 for k, v in data.items()}
        q = parts.get("qdata")
        model = state.get("dtype")
        found = None if q is None or len(q.shape) != 2 else _logical(
            name, str(meta["_type"]), q.shape, model.name if isinstance(model, DtypeValue) else q.dtype, state, parts,
            prefix)
        if found is not None:
            for k in parts:
                del out[prefix + k]
            out[name] = found
    return out


_PARTS = ("qdata", "scale", "zero_point")


def _logical(name: str, cls: str, shape: tuple[int, ...], model_dtype: str, state: Mapping[str, Any],
             parts: Mapping[str, TensorInfo], prefix: str | None) -> TensorInfo | None:
    """One logical tensor from a subclass's parts and attributes, or None where the layout is not one
    statecli reads (nibble-packed int4, block scales that do not tile). `prefix` names the parts'
    own entries (safetensors); None: they live inside the pickled subclass (`name.qdata`...)."""
    q, s, z = parts.get("qdata"), parts.get("scale"), parts.get("zero_point")
    if q is None or s is None or len(shape) != 2:
        return None
    logical = _logical_type(dict(state), q.dtype)
    block = _block(dict(state), shape, s)
    if logical is None or block is None or q.shape != shape or (z is not None and z.numel != s.numel):
        return None
    dtype, bits = logical
    pairs = [("weight", "qdata", q), ("weight_scale", "scale", s)] + (
        [("weight_zero_point", "zero_point", z)] if z is not None else [])
    sym = "" if z is None else ", asym"
    names = tuple((r, f"{name}.{p}" if prefix is None else prefix + p) for r, p, _ in pairs)
    quant = QuantInfo(f"torchao {cls} {dtype.replace('_', ' ')}{sym}, {_granularity(block, shape)}",
                      Method.TORCHAO.value, model_dtype, parts=names,
                      tensors=tuple(t for _, _, t in pairs), block=block, bits=bits, codec="scaled",
                      settings=(("inline", True),) if prefix is None else ())
    return TensorInfo(dtype, shape, q.device, layout="quantized", source=q.source,
                      stored_nbytes=sum(t.storage_size for _, _, t in pairs), quant=quant)
