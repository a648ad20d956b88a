"""Parameter / buffer / other, with the evidence for each decision, strongest evidence first: a model
definition, the pickled module, the container an entry sits in, and name/dtype rules."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from .state import Checkpoint, Entry, Evidence, Kind, Role, Source, TensorInfo
from .units import COMPLEX, is_floating

if TYPE_CHECKING:
    from .modeldef import ModelInfo

EMA_KEYS = ("model_ema", "ema", "state_dict_ema", "ema_state_dict", "ema_model", "module_ema", "model_ema_state_dict")
OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states", "optim", "opt", "optimizers",
                  "optim_state", "lr_scheduler", "lr_schedulers", "scheduler", "schedulers", "scheduler_state_dict",
                  "scaler", "grad_scaler", "amp")
PICKLED = Evidence(Source.PICKLED_MODULE)

_BN_STATS = {"running_mean", "running_var"}
_POSITION = {"position_ids", "token_type_ids"}
# Persistent buffers of popular families whose names the generic rules would call parameters.
_KNOWN_BUFFERS = {"final_logits_bias": "BART-family buffer"}
# Float tensors that are masks by name: GPT-2's legacy masked_bias and additive attention masks.
_FLOAT_MASKS = {"masked_bias", "attn_mask", "attention_mask", "causal_mask"}
# torch.get_rng_state()/cuda.get_rng_state() results as trainers save them (HF Trainer's rng_state.pth,
# accelerate's random_states_N.pkl, hand-written {"rng_state": ...}).
_RNG_NAME = re.compile(r"(^|[._])(rng|random|manual_seed)", re.IGNORECASE)
_RNG_ROOT = {"python", "numpy", "cpu"}  # HF Trainer's rng_state.pth
_OPTIMIZER_ROOT = {"state", "param_groups"}  # torch.optim.Optimizer.state_dict()


def infer(name: str, tensor: TensorInfo | None) -> tuple[Kind, Evidence]:
    """Kind and evidence for an entry of a model state when nothing but names and dtypes is known.
    Every answer says it is inferred: a checkpoint alone cannot tell parameters from buffers."""
    if tensor is None:
        return Kind.METADATA, Evidence(Source.NOT_TENSOR)
    if tensor.is_parameter_object:
        return Kind.PARAMETER, Evidence(Source.PICKLED_PARAMETER)
    leaf = name.rsplit(".", 1)[-1]
    floating = is_floating(tensor.dtype) or tensor.dtype in COMPLEX
    if leaf in _BN_STATS or leaf == "num_batches_tracked":
        return Kind.BUFFER, _rule("BatchNorm name")
    if leaf in _POSITION:
        return Kind.BUFFER, _rule("position_ids")
    if leaf == "inv_freq" or leaf.endswith("_inv_freq"):
        return Kind.BUFFER, _rule("inv_freq")
    if leaf in _KNOWN_BUFFERS:
        return Kind.BUFFER, _rule(_KNOWN_BUFFERS[leaf])
    if _is_rng_state(name, tensor):
        return Kind.METADATA, _rule("RNG state")
    # Masks are bool/integer; a float tensor named like a mask (wav2vec2's masked_spec_embed) is learned.
    if leaf in _FLOAT_MASKS or not floating and ("mask" in leaf.lower() or leaf == "bias"):
        return Kind.BUFFER, _rule("mask name")
    if not floating:
        return Kind.BUFFER, _rule(f"{tensor.dtype} dtype")
    return Kind.PARAMETER, _rule("float")


def _is_rng_state(name: str, tensor: TensorInfo) -> bool:
    return tensor.dtype == "uint8" and len(tensor.shape) == 1 and bool(_RNG_NAME.search(name))


def container_role(name: str, *, state_dict: bool, tensors: bool) -> tuple[Role, Kind | None]:
    """What a top-level container beside the model state holds, from its name and content, and the
    kind its tensors get (None: infer each from its name, as for a model state)."""
    low = name.lower()
    if name in OPTIMIZER_KEYS or "optim" in low or "scheduler" in low:
        return Role.OPTIMIZER, Kind.OPTIMIZER
    if name in EMA_KEYS or "ema" in low.split("_"):
        return Role.EMA, None
    if _RNG_NAME.search(name):
        return Role.METADATA, Kind.METADATA
    if state_dict:
        return Role.OTHER_STATE, None
    if tensors:
        return Role.OTHER, Kind.UNKNOWN
    return Role.METADATA, Kind.UNKNOWN


def root_role(keys: Iterable[str]) -> tuple[Role, Kind, Evidence] | None:
    """A file whose root is not a model state at all: a bare optimizer.state_dict() (accelerate's
    optimizer.bin) or a saved RNG state (HF Trainer's rng_state.pth). None for anything else."""
    names = {str(k) for k in keys}
    if names == _OPTIMIZER_ROOT:
        return Role.OPTIMIZER, Kind.OPTIMIZER, Evidence(Source.CONTAINER, "optimizer.state_dict() layout")
    if _RNG_ROOT <= names:
        return Role.METADATA, Kind.METADATA, Evidence(Source.CONTAINER, "RNG state layout")
    return None


def in_container(name: str, tensor: TensorInfo | None, kind_for_tensors: Kind) -> tuple[Kind, Evidence]:
    """Entries outside the model state: optimizer state, counters, hyper-parameters."""
    if tensor is None:
        return Kind.METADATA, Evidence(Source.NOT_TENSOR)
    if kind_for_tensors == Kind.UNKNOWN:
        if _is_rng_state(name, tensor):
            return Kind.METADATA, _rule("RNG state")
        return Kind.UNKNOWN, Evidence(Source.OUTSIDE)
    return kind_for_tensors, Evidence(Source.CONTAINER)


def pickled(slot: Literal["parameter", "buffer", "attribute"], non_persistent: bool = False) -> tuple[Kind, Evidence]:
    """Exact kind from a pickled nn.Module: which of its dicts (_parameters, _buffers, a plain
    attribute) held the tensor, and whether _non_persistent_buffers_set names it."""
    if slot == "parameter":
        return Kind.PARAMETER, PICKLED
    if slot == "buffer":
        return (Kind.BUFFER_NP if non_persistent else Kind.BUFFER), PICKLED
    return Kind.ATTRIBUTE, PICKLED


def with_model(ck: Checkpoint, info: ModelInfo) -> Checkpoint:
    """A new Checkpoint whose model-state tensors take their kind from the model definition: each
    file key maps (through any rename or fusion the model's loader applies) to the model entries it
    becomes. Entries the model does not know stay visible as unknown."""
    if any(c.role is not Role.MODEL and c.name == (ck.container or "(root)") for c in ck.containers):
        return replace(ck, warnings=ck.warnings + info.warnings)  # the root is optimizer or RNG state
    names = [e.name for e in ck.entries if e.group == "" and e.tensor is not None]
    matches = info.map_keys(names)
    out: list[Entry] = []
    for e in ck.entries:
        if e.group != "" or e.tensor is None:
            out.append(e)
            continue
        m = matches.get(e.name)
        if m is None:
            out.append(replace(e, kind=Kind.UNKNOWN, evidence=Evidence(Source.NOT_IN_MODEL)))
            continue
        slot = info.slots[m.targets[0]]
        out.append(replace(e, kind=slot.kind, evidence=Evidence(Source.MODEL, m.how)))
    return replace(ck, entries=out, modules=list(info.modules), warnings=ck.warnings + info.warnings)


def _rule(detail: str) -> Evidence:
    return Evidence(Source.RULE, detail)
