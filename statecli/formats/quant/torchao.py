"""torchao's tensor subclasses in a .pt, read inertly: a wrapper subclass (Int8Tensor, Float8Tensor,
...) pickles its tensors in its state (qdata, scale) and is rebuilt through
torch._utils._rebuild_wrapper_subclass, which statecli's unpickler records without importing
torchao. Where the state holds qdata and a scale, the weight is one logical quantized tensor whose
values are qdata x scale (torchao's dequantize() for these per-row layouts); the file's verdict
stays needs-trust (torch.load needs add_safe_globals for these classes), never dangerous."""

from __future__ import annotations

from collections.abc import Callable

from ...pickle.unpickler import TensorRef
from ...qtensor import QuantInfo
from ...state import TensorInfo
from .config import Method

__all__ = ["torchao_logical"]

_TYPES = {"int8": "int8", "float8_e4m3fn": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}


def torchao_logical(name: str, ref: TensorRef, info: Callable[[TensorRef], TensorInfo]) -> TensorInfo | None:
    """The logical tensor of a torchao wrapper subclass `ref` (its parts made TensorInfos by `info`),
    or None where it is not one statecli reads (another class, another layout)."""
    state = ref.subclass_state
    if not (ref.subclass or "").startswith("torchao.") or not state:
        return None
    qdata, scale = state.get("qdata"), state.get("scale")
    if not isinstance(qdata, TensorRef) or not isinstance(scale, TensorRef) or len(ref.shape) != 2:
        return None
    q, s = info(qdata), info(scale)
    dtype = _TYPES.get(q.dtype)
    rows, cols = ref.shape
    if dtype is None or q.shape != ref.shape or s.numel not in (1, rows):
        return None  # int4 packings and block scales are other layouts
    gran = "per-tensor" if s.numel == 1 else "per-channel"
    cls = (ref.subclass or "").rpartition(".")[2]
    quant = QuantInfo(f"torchao {cls} {dtype.replace('_', ' ')}, {gran}", Method.TORCHAO.value, ref.dtype,
                      parts=(("weight", f"{name}.qdata"), ("weight_scale", f"{name}.scale")), tensors=(q, s),
                      block=(1, cols) if s.numel == rows else (rows, cols), bits=8, codec="scaled",
                      settings=(("inline", True),))  # the parts live inside the subclass, not as entries
    return TensorInfo(dtype, ref.shape, ref.location, layout="quantized", source=q.source,
                      stored_nbytes=q.storage_size + s.storage_size, quant=quant)
