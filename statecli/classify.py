"""Parameter / buffer / other, with the evidence for each decision, strongest evidence first: a model
definition, the pickled module, the container an entry sits in, and name/dtype rules."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from .notes import Note, NoteKind
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
# Persistent buffers of popular families whose names the generic rules would call parameters.
_KNOWN_BUFFERS = {"final_logits_bias": "BART-family buffer",
                  # DeepSeek-V3-style routers register it as a buffer (ERNIE-4.5 MoE alone as a parameter)
                  "e_score_correction_bias": "MoE router score-correction bias",
                  # I-BERT's activation observers; Gemma-4 audio's clipping ranges
                  "x_min": "quantization observer", "x_max": "quantization observer",
                  "input_min": "clipping range", "input_max": "clipping range",
                  "output_min": "clipping range", "output_max": "clipping range"}
# I-BERT's QuantLinear/QuantAct buffers: scale factors and integer copies of the weights.
_OBSERVER_SUFFIXES = ("_scaling_factor", "_integer")
# Buffers that transformers registers with persistent=False (in every model, or most): a file that holds
# one was written by code that kept it (an older version, or one model that registers it persistent).
_LIBRARY_NP = {"inv_freq": "rotary inv_freq, non-persistent in transformers",
               "original_inv_freq": "rotary inv_freq, non-persistent in transformers",
               "position_ids": "position_ids, usually non-persistent",
               "token_type_ids": "token_type_ids, usually non-persistent",
               "relative_position_index": "relative_position_index, non-persistent in Swin-V2",
               "relative_coords_table": "relative_coords_table, non-persistent in Swin-V2",
               "embed_scale": "embed_scale, non-persistent in Gemma",
               "normalizer": "normalizer, non-persistent in RecurrentGemma"}
# Float tensors that are masks by name: GPT-2's legacy masked_bias and additive attention masks.
_FLOAT_MASKS = {"masked_bias", "attn_mask", "attention_mask", "causal_mask"}
# torch.get_rng_state()/cuda.get_rng_state() results as trainers save them (HF Trainer's rng_state.pth,
# accelerate's random_states_N.pkl, hand-written {"rng_state": ...}).
_RNG_NAME = re.compile(r"(^|[._])(rng|random|manual_seed)", re.IGNORECASE)
_OPTIMIZER_ROOT = {"state", "param_groups"}  # torch.optim.Optimizer.state_dict()
# Whole files that are no model state: keys that must all be at the root, and what the file then is.
_ROOTS: tuple[tuple[frozenset[str], Role, Kind, str], ...] = (
    (frozenset({"base_lrs", "last_epoch"}), Role.OPTIMIZER, Kind.OPTIMIZER, "lr scheduler state_dict() layout"),
    (frozenset({"scale", "growth_factor", "backoff_factor", "growth_interval"}), Role.OPTIMIZER, Kind.OPTIMIZER,
     "GradScaler state_dict() layout"),
    (frozenset({"python", "numpy", "cpu"}), Role.METADATA, Kind.METADATA, "RNG state layout"),  # HF Trainer
    (frozenset({"random_state", "numpy_random_seed", "torch_manual_seed"}), Role.METADATA, Kind.METADATA,
     "RNG state layout"),  # accelerate's random_states_N.pkl
)
# Lightning's non-model containers: callback, loop and hyper-parameter state, never model entries.
_TRAINER_STATE = {"callbacks", "loops", "hyper_parameters", "datamodule_hyper_parameters", "hparams"}
# accelerate's save_state folder: file name pattern -> what the file holds.
_ACCELERATE = ((re.compile(r"^optimizer(_\d+)?\.bin$"), "optimizer state"),
               (re.compile(r"^scheduler(_\d+)?\.bin$"), "lr scheduler state"),
               (re.compile(r"^random_states_\d+\.pkl$"), "RNG state"),
               (re.compile(r"^scaler\.pt$"), "GradScaler state"),
               (re.compile(r"^(model(_\d+)?\.safetensors|pytorch_model(_\d+)?\.bin)$"), "model state"))


def infer(name: str, tensor: TensorInfo | None) -> tuple[Kind, Evidence]:
    """Kind and evidence for an entry of a model state when nothing but names and dtypes is known.
    Every answer says it is inferred: a checkpoint alone cannot tell parameters from buffers."""
    if tensor is None:
        return Kind.METADATA, Evidence(Source.NOT_TENSOR)
    if tensor.is_parameter_object:
        return Kind.PARAMETER, Evidence(Source.PICKLED_PARAMETER)
    if tensor.quant is not None:  # a quantized weight's logical tensor: the parameter it stands for
        return Kind.PARAMETER, _rule("quantized weight")
    leaf = name.rsplit(".", 1)[-1]
    floating = is_floating(tensor.dtype) or tensor.dtype in COMPLEX
    if leaf in _BN_STATS or leaf == "num_batches_tracked":
        return Kind.BUFFER, _rule("BatchNorm name")
    library = _LIBRARY_NP.get(leaf) or (_LIBRARY_NP["inv_freq"] if leaf.endswith("_inv_freq") else None)
    if library is not None:  # in the file, so persistent in the code that saved it: a buffer either way
        return Kind.BUFFER, _rule(library)
    if leaf in _KNOWN_BUFFERS:
        return Kind.BUFFER, _rule(_KNOWN_BUFFERS[leaf])
    if floating and leaf.endswith(_OBSERVER_SUFFIXES):
        return Kind.BUFFER, _rule("quantization observer")
    if _is_rng_state(name, tensor):
        return Kind.METADATA, _rule("RNG state")
    # Masks are bool/integer; a float tensor named like a mask (wav2vec2's masked_spec_embed) is learned.
    if leaf in _FLOAT_MASKS or not floating and ("mask" in leaf.lower() or leaf == "bias"):
        return Kind.BUFFER, _rule("mask name")
    if not floating:
        return Kind.BUFFER, _rule(f"{tensor.dtype} dtype")
    return Kind.PARAMETER, _rule("float")


@dataclass(frozen=True)
class FileFacts:
    """What a file says beyond names and dtypes that the rules over a whole state use."""

    versions: Mapping[str, int] | None = None  # state_dict()._metadata: module path -> its class's _version
    legacy: bool = False  # torch's pre-1.6 format, the only one a file from before torch 0.4.1 can have

    @staticmethod
    def of(metadata: Any, legacy: bool) -> FileFacts:
        """From a saved state_dict()._metadata (None where the file has none) and the file's format."""
        versions = None
        if isinstance(metadata, Mapping):
            versions = {str(k): v["version"] for k, v in metadata.items()
                        if isinstance(v, Mapping) and isinstance(v.get("version"), int)}
        return FileFacts(versions, legacy)


def infer_state(tensors: Sequence[tuple[str, TensorInfo | None]],
                facts: FileFacts = FileFacts()) -> list[tuple[Kind, Evidence]]:
    """infer() for every entry of one state, then the rules that need the entry's siblings (in_context)."""
    out = [infer(name, t) for name, t in tensors]
    for i, answer in in_context(tensors, out, facts).items():
        out[i] = answer
    return out


def refine(entries: list[Entry], facts: FileFacts) -> list[Entry]:
    """`entries` with the sibling rules (in_context) applied to each group's inferred tensors; `facts`
    describe the model state (group ""), other groups (an EMA copy) are judged by their names alone."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        if e.evidence.source is Source.RULE and e.tensor is not None:
            groups.setdefault(e.group, []).append(i)
    out = entries
    for group, idx in groups.items():
        pairs = [(entries[i].name, entries[i].tensor) for i in idx]
        answers = in_context(pairs, [(entries[i].kind, entries[i].evidence) for i in idx],
                             facts if group == "" else FileFacts(legacy=facts.legacy))
        for j, (kind, ev) in answers.items():
            if out is entries:
                out = list(entries)
            e = entries[idx[j]]  # built directly: dataclasses.replace costs 10x per entry
            out[idx[j]] = Entry(e.name, e.tensor, e.value, e.value_type, kind, ev, e.group)
    return out


# Leaves a sibling rule looks at: BatchNorm's, VQ codebooks' (Encodec/Bark/XCodec: embed, embed_avg,
# cluster_size, inited; Mimi: embed_sum, cluster_usage, initialized) and I-BERT's IntLayerNorm shift.
_BN_LEAVES = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
_CODEBOOK_STATS = {"embed_avg", "cluster_size", "embed_sum", "cluster_usage"}
_CODEBOOK = _CODEBOOK_STATS | {"embed", "inited", "initialized"}
_SIBLING_LEAVES = _BN_LEAVES | _CODEBOOK | {"shift"}
# A leaf whose presence makes a sibling rule apply (refine's filter before any per-name work).
_TRIGGER = re.compile(r"(running_var|_scaling_factor|" + "|".join(sorted(_CODEBOOK_STATS)) + r")\n")


def in_context(tensors: Sequence[tuple[str, TensorInfo | None]], answers: Sequence[tuple[Kind, Evidence]],
               facts: FileFacts) -> dict[int, tuple[Kind, Evidence]]:
    """Kinds that infer() cannot see from one name: {index: new answer} for float buffers that the
    generic rules call parameters because they look like weights — a frozen BatchNorm's weight and bias,
    a VQ codebook's EMA state, I-BERT's `shift`. Only entries inferred as parameters change."""
    if not _TRIGGER.search("\n".join(name for name, _ in tensors) + "\n"):
        return {}  # one C-speed pass: most files (a transformer's) have nothing a sibling rule reads
    modules: dict[str, dict[str, int]] = {}
    observers = False
    for i, (name, t) in enumerate(tensors):
        module, _, leaf = name.rpartition(".")
        if leaf in _SIBLING_LEAVES and t is not None:
            modules.setdefault(module, {})[leaf] = i
        elif leaf.endswith(_OBSERVER_SUFFIXES):
            observers = True
    recent = any("num_batches_tracked" in leaves and "running_mean" in leaves for leaves in modules.values())
    out: dict[int, tuple[Kind, Evidence]] = {}
    for module, leaves in modules.items():
        if _BN_STATS <= leaves.keys() and "num_batches_tracked" not in leaves:
            found = [leaves[k] for k in ("weight", "bias") if k in leaves]
            _put(out, answers, found, _frozen_bn(module, recent, facts))
        if _CODEBOOK_STATS & leaves.keys():
            _put(out, answers, [i for k, i in leaves.items() if k in _CODEBOOK], (Kind.BUFFER, _rule("VQ codebook state")))
        if observers and "shift" in leaves:
            _put(out, answers, [leaves["shift"]], (Kind.BUFFER, _rule("quantization observer")))
    return out


def _put(out: dict[int, tuple[Kind, Evidence]], answers: Sequence[tuple[Kind, Evidence]], idx: list[int],
         answer: tuple[Kind, Evidence]) -> None:
    for i in idx:
        if answers[i][0] is Kind.PARAMETER and answers[i][1].source is Source.RULE and answer != answers[i]:
            out[i] = answer


def _frozen_bn(module: str, recent: bool, facts: FileFacts) -> tuple[Kind, Evidence]:
    """Weight and bias beside running statistics with no num_batches_tracked: a frozen BatchNorm
    (torchvision's FrozenBatchNorm2d, transformers' DETR/RT-DETR backbones: all four are buffers) or
    torch's BatchNorm saved before 0.4.1 added the counter (parameters). The first saved state_dict
    version (torch's BatchNorm is 2), else the other BatchNorms of the file, decide; failing both the
    answer says it is a guess."""
    version = facts.versions.get(module) if facts.versions is not None else None
    if version is not None:
        if version >= 2:
            return Kind.PARAMETER, _rule(f"BatchNorm (state_dict version {version})")
        return Kind.BUFFER, _rule(f"frozen BatchNorm (state_dict version {version})")
    if recent:
        return Kind.BUFFER, _rule("frozen BatchNorm (no num_batches_tracked; others have it)")
    if facts.legacy:
        return Kind.PARAMETER, _rule("ambiguous: BatchNorm from torch < 0.4.1, or frozen")
    return Kind.BUFFER, _rule("ambiguous: frozen BatchNorm, or from torch < 0.4.1")


def _is_rng_state(name: str, tensor: TensorInfo) -> bool:
    return tensor.dtype == "uint8" and len(tensor.shape) == 1 and bool(_RNG_NAME.search(name))


def container_role(name: str, *, state_dict: bool, tensors: bool) -> tuple[Role, Kind | None]:
    """What a top-level container beside the model state holds, from its name and content, and the
    kind its tensors get (None: infer each from its name, as for a model state)."""
    low = name.lower()
    if name in OPTIMIZER_KEYS or "optim" in low or "scheduler" in low:
        return Role.OPTIMIZER, Kind.OPTIMIZER
    if name in _TRAINER_STATE:
        return Role.METADATA, Kind.METADATA
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
    for need, role, kind, what in _ROOTS:
        if need <= names:
            return role, kind, Evidence(Source.CONTAINER, what)
    return None


def training_note(ck: Checkpoint) -> str | None:
    """What kind of training checkpoint `ck` is, when its layout says so (PyTorch Lightning's .ckpt)."""
    values = {e.name: e.value for e in ck.entries if e.tensor is None and "." not in e.name}
    groups = {c.name for c in ck.containers}
    if "pytorch-lightning_version" not in values and not {"optimizer_states", "lr_schedulers"} <= groups:
        return None
    version = values.get("pytorch-lightning_version")
    facts = ", ".join(f"{k} {values[k]}" for k in ("epoch", "global_step") if k in values)
    return (f"a PyTorch Lightning checkpoint{f' (Lightning {version})' if version else ''}{f': {facts}' if facts else ''}; "
            "model state from state_dict (keys start with the LightningModule's attribute names), optimizer_states and "
            "lr_schedulers as optimizer state, callbacks, loops and hyper_parameters as metadata")


def folder_note(names: Iterable[str], current: str) -> str | None:
    """In an accelerate save_state folder (None for any other folder): what each file holds, for
    its model state file `current`; what `current` is, for the others."""
    found = {n: what for n in sorted(names) for pattern, what in _ACCELERATE if pattern.match(n)}
    if not any(w == "RNG state" for w in found.values()) or not any(w == "optimizer state" for w in found.values()):
        return None
    if found.get(current, "model state") != "model state":
        return f"{current} of an accelerate save_state folder: {found[current]}"
    return ("an accelerate save_state folder: " + ", ".join(f"{n} ({w})" for n, w in found.items())
            + f"; this shows {current}, inspect each file for the rest")


def with_adapter(ck: Checkpoint, config: dict[str, Any]) -> Checkpoint:
    """A PEFT adapter file (adapter_config.json beside it): every tensor is a trainable adapter
    parameter, labelled with the target module it adapts; a note names the targets."""
    targets = config.get("target_modules") or []
    if isinstance(targets, str):  # a regex over module names
        pattern = re.compile(targets)
        # PEFT matches module names of the base model: without the saved file's base_model.model. prefix.
        match: Any = lambda module: bool(pattern.fullmatch(module.removeprefix("base_model.model.")))  # noqa: E731
    else:
        wanted = {str(t) for t in targets}
        match = lambda module: module.rsplit(".", 1)[-1] in wanted or module in wanted  # noqa: E731
    rank = config.get("r")
    extra = f", r={rank}" if isinstance(rank, int) else ""
    saved = {str(m) for m in config.get("modules_to_save") or []}
    out: list[Entry] = []
    hit: set[str] = set()
    for e in ck.entries:
        if e.group != "" or e.tensor is None:
            out.append(e)
            continue
        parts = e.name.split(".")
        module = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if match(".".join(parts[:i]))), None)
        if module is not None:
            leaf = module.rsplit(".", 1)[-1]
            hit.add(leaf)
            detail = f"PEFT adapter (target {leaf}{extra})"
        elif any(p in saved for p in parts):
            detail = f"PEFT adapter (modules_to_save {next(p for p in parts if p in saved)})"
        else:
            detail = "PEFT adapter"
        out.append(replace(e, kind=Kind.PARAMETER, evidence=Evidence(Source.CONTAINER, detail)))
    peft = config.get("peft_type") or "PEFT"
    base = config.get("base_model_name_or_path")
    shown = ", ".join(sorted(hit)) or (targets if isinstance(targets, str) else ", ".join(map(str, targets))) or "none named"
    note = (f"a {peft} adapter{f' for {base}' if base else ''} (adapter_config.json{extra.replace(', ', ': ', 1)}): "
            f"targets {shown}; every tensor is an adapter parameter, loaded onto the base model by "
            "PeftModel.from_pretrained")
    return replace(ck, entries=out).with_notes([Note(NoteKind.LAYOUT, note)])


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
    if any(c.role is not Role.MODEL and c.name == ck.container_name for c in ck.containers):
        return ck.with_notes(_model_notes(info))  # the root is optimizer or RNG state
    names = [e.name for e in ck.entries if e.group == "" and e.tensor is not None]
    matches = info.map_keys(names)
    out: list[Entry] = []
    for e in ck.entries:
        if e.group != "" or e.tensor is None:
            out.append(e)
            continue
        m = matches.get(e.name)
        if ck.outside_state_dict(e):
            out.append(e)  # the pickle's own answer is exact; no state_dict() holds it for the model to take
            continue
        if m is None:
            out.append(replace(e, kind=Kind.UNKNOWN, evidence=Evidence(Source.NOT_IN_MODEL)))
            continue
        slot = info.slots[m.targets[0]]
        out.append(replace(e, kind=slot.kind, evidence=Evidence(Source.MODEL, m.how)))
    return replace(ck, entries=out, modules=list(info.modules)).with_notes(_model_notes(info))


def _model_notes(info: ModelInfo) -> list[Note]:
    return [Note(NoteKind.MODEL, w) for w in info.warnings]


_RULES: dict[str, Evidence] = {}


def _rule(detail: str) -> Evidence:
    # One shared (frozen) Evidence per rule: building one per tensor was 10% of reading 50,000 tensors.
    ev = _RULES.get(detail)
    if ev is None:
        ev = _RULES[detail] = Evidence(Source.RULE, detail)
    return ev
