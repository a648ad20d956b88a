"""Quantized checkpoints (GPTQ/AWQ, compressed-tensors, bitsandbytes, FP8 block scales, MXFP4): the
scheme a config names (config.py), the storage entries of each quantized weight grouped into one
logical tensor (layouts.py) and its values dequantized in numpy (dequant.py, registered with the
value readers on import). `regroup` is the one pass the reader layer runs on a state dict it read."""

from __future__ import annotations

from collections.abc import Mapping

from ...pickle.inert import StateDict
from ...pickle.unpickler import TensorRef
from ...state import TensorInfo
from .._common import RawCheckpoint
from . import dequant as dequant  # noqa: F401 - registers the codecs with io.values.DEQUANTIZERS
from .config import Method, QuantConfig, find_config, parse_config
from .layouts import group_tensors
from .torchao import torchao_logical, torchao_safetensors

__all__ = ["Method", "QuantConfig", "find_config", "parse_config", "regroup"]


def regroup(raw: RawCheckpoint) -> list[str]:
    """Replace the storage entries of each quantized weight in a plain state dict `raw.root` by one
    logical tensor; the notes to show (the scheme and where it came from, or why it was inferred)."""
    root = raw.root
    if not isinstance(root, Mapping) or not root or not all(isinstance(v, (TensorInfo, TensorRef))
                                                           for v in root.values()):
        return []
    names = [str(k) for k in root]
    subclasses = any(isinstance(v, TensorRef) and v.subclass_state for v in root.values())
    torchao_meta = "tensor_names" in (raw.metadata or {})  # torchao's safetensors form
    if not subclasses and not torchao_meta and not any(n.endswith(_HINTS) for n in names):
        return []  # the common unquantized file: no config read, no dict rebuilt
    cfg, why = find_config(raw.path)
    tensors = {str(k): _logical(raw, str(k), v) for k, v in root.items()}
    if torchao_meta:
        tensors = torchao_safetensors(tensors, raw.metadata)
    grouped = group_tensors(tensors, cfg)
    notes = [why] if why else []
    if grouped is None:
        return notes
    new: dict[str, object] = StateDict(grouped.root) if isinstance(root, StateDict) else grouped.root
    if isinstance(root, StateDict) and isinstance(new, StateDict):
        new.pickled_state = root.pickled_state
    raw.root = new
    methods = ", ".join(grouped.methods)
    where = (f"quantization_config in {cfg.source}" if cfg is not None
             else "inferred from tensor names, dtypes and shapes (no quantization config beside the file)"
             if grouped.inferred else "named by the file's pickled tensor subclasses (read inertly)" if subclasses
             else "named by torchao's safetensors metadata")
    notes.append(f"{grouped.logical} quantized weight(s) ({methods}) shown as logical tensors: {where}; "
                 "--storage lists their stored parts")
    return notes


def _logical(raw: RawCheckpoint, name: str, v: TensorInfo | TensorRef) -> TensorInfo:
    """A leaf as its TensorInfo; a torchao subclass it reads as its logical quantized tensor."""
    if isinstance(v, TensorRef) and v.subclass_state:
        found = torchao_logical(name, v, raw.tensor_info)
        if found is not None:
            return found
    return raw.tensor_info(v)


# Suffixes only a quantized layout's parts have: the cheap test before any grouping is tried.
_HINTS = (".qweight", ".weight_packed", ".weight_scale", ".weight_scale_inv", "_blocks", ".SCB",
          ".weight.quant_state.bitsandbytes__nf4", ".weight.quant_state.bitsandbytes__fp4",
          ".weight._scale")
