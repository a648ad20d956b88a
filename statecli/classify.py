"""Parameter / buffer / other, with the evidence for each decision, strongest evidence first."""

from __future__ import annotations

from .state import Evidence, Kind, Source, TensorInfo
from .units import COMPLEX, is_floating

_BN_STATS = {"running_mean", "running_var"}
_POSITION = {"position_ids", "token_type_ids"}


def infer(name: str, tensor: TensorInfo | None) -> tuple[Kind, Evidence]:
    """Kind and evidence for an entry of a model state when nothing but names and dtypes is known.
    Every answer says it is inferred: a checkpoint alone cannot tell parameters from buffers."""
    if tensor is None:
        return Kind.METADATA, Evidence(Source.NOT_TENSOR)
    if tensor.is_parameter_object:
        return Kind.PARAMETER, Evidence(Source.PICKLED_PARAMETER)
    leaf = name.rsplit(".", 1)[-1]
    if leaf in _BN_STATS:
        return Kind.BUFFER, _rule("BatchNorm name")
    if leaf == "num_batches_tracked":
        return Kind.BUFFER, _rule("BatchNorm name")
    if leaf in _POSITION:
        return Kind.BUFFER, _rule("position_ids")
    if leaf == "inv_freq" or leaf.endswith("_inv_freq"):
        return Kind.BUFFER, _rule("inv_freq")
    if "mask" in leaf.lower() or (leaf in ("bias", "masked_bias") and not is_floating(tensor.dtype)):
        return Kind.BUFFER, _rule("mask name")
    if not is_floating(tensor.dtype) and tensor.dtype not in COMPLEX:
        return Kind.BUFFER, _rule(f"{tensor.dtype} dtype")
    return Kind.PARAMETER, _rule("float")


def classify_other(tensor: TensorInfo | None, kind_for_tensors: Kind) -> tuple[Kind, Evidence]:
    """Entries outside the model state: optimizer state, counters, hyper-parameters."""
    if tensor is None:
        return Kind.METADATA, Evidence(Source.NOT_TENSOR)
    if kind_for_tensors == Kind.UNKNOWN:
        return Kind.UNKNOWN, Evidence(Source.OUTSIDE)
    return kind_for_tensors, Evidence(Source.CONTAINER)


def _rule(detail: str) -> Evidence:
    return Evidence(Source.RULE, detail)
