"""Parameter / buffer / other, with the evidence for each decision, strongest evidence first."""

from __future__ import annotations

from .state import BUFFER, COMPLEX, METADATA, PARAMETER, UNKNOWN, TensorInfo, is_floating

EV_PICKLED_MODULE = "pickled module"
EV_PICKLED_PARAMETER = "pickled as nn.Parameter"

_BN_STATS = {"running_mean", "running_var"}
_POSITION = {"position_ids", "token_type_ids"}


def infer(name: str, tensor: TensorInfo | None) -> tuple[str, str]:
    """Kind and evidence for an entry of a model state when nothing but names and dtypes is known.
    Every answer says it is inferred: a checkpoint alone cannot tell parameters from buffers."""
    if tensor is None:
        return METADATA, "not a tensor"
    if tensor.is_parameter_object:
        return PARAMETER, EV_PICKLED_PARAMETER
    leaf = name.rsplit(".", 1)[-1]
    if leaf in _BN_STATS:
        return BUFFER, "inferred (BatchNorm name)"
    if leaf == "num_batches_tracked":
        return BUFFER, "inferred (BatchNorm name)"
    if leaf in _POSITION:
        return BUFFER, "inferred (position_ids)"
    if leaf == "inv_freq" or leaf.endswith("_inv_freq"):
        return BUFFER, "inferred (inv_freq)"
    if "mask" in leaf.lower() or (leaf in ("bias", "masked_bias") and not is_floating(tensor.dtype)):
        return BUFFER, "inferred (mask name)"
    if not is_floating(tensor.dtype) and tensor.dtype not in COMPLEX:
        return BUFFER, f"inferred ({tensor.dtype} dtype)"
    return PARAMETER, "inferred (float)"


def classify_other(tensor: TensorInfo | None, kind_for_tensors: str) -> tuple[str, str]:
    """Entries outside the model state: optimizer state, counters, hyper-parameters."""
    if tensor is None:
        return METADATA, "not a tensor"
    if kind_for_tensors == UNKNOWN:
        return UNKNOWN, "outside the model state"
    return kind_for_tensors, "container name"
