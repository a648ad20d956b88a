"""Planning a rewrite: a spec and a loaded checkpoint become a frozen Plan of decisions by entry."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..classify import with_model
from ..errors import UsageError, user_regex
from ..formats import RawCheckpoint
from ..notes import Note, NoteKind
from ..qtensor import GGUF_METHOD
from ..state import Checkpoint, Entry, Kind, Role, StorageId
from ..storage import unique_storage_bytes
from ..units import CAST_TARGETS, dtype_name, is_floating
from ..vocab import CastOnly, ChangeKind, Layout
from .spec import CastSpec, ConvertSpec, MoveSpec, Spec, StripSpec

if TYPE_CHECKING:
    from ..open import ModelChoice, Opened

EntryKey = tuple[str, str]  # (container, name)


@dataclass(frozen=True)
class Change:
    """One thing a rewrite did (or, for removals and moves, will do) to the checkpoint."""

    name: str
    what: ChangeKind
    detail: str = ""
    nbytes: int = 0
    overflow: int = 0
    underflow: int = 0


def entry_key(e: Entry) -> EntryKey:
    """Plan decisions are keyed by container and name: 'scale' in the model state and a top-level
    'scale' beside it are different entries."""
    return (e.group, e.name)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Decisions by entry: drop, cast to a dtype, a device to write for every storage. Frozen: the
    collections are converted to frozenset / MappingProxyType / tuple on creation."""

    ck: Checkpoint
    raw: RawCheckpoint
    drop: frozenset[EntryKey] = frozenset()
    cast: Mapping[EntryKey, str] = field(default_factory=dict)  # entry -> target dtype
    location: str | None = None
    model_from: str | None = None  # a container whose entries replace the model state (EMA promotion)
    changes: tuple[Change, ...] = ()
    notes: tuple[Note, ...] = ()
    model: Any = None  # modeldef.ModelInfo: an output must load strictly wherever the input did
    renames: Mapping[str, str] = field(default_factory=dict)  # model-state key -> new key (rename.py)
    rename_spec: Any = None  # rename.Renames that made `renames` (also renames the state's _metadata)
    device_notes: tuple[Note, ...] = ()  # notes true only where the output format records a device
    # safetensors outputs: tied keys written as copies (plain load_file loads strictly) instead of
    # left out under save_model's convention; `tied` maps each key left out to the key that stores it.
    duplicate_tied: bool = False
    tied: Mapping[str, str] = field(default_factory=dict)
    # .pt outputs: tied keys the input leaves out but records (modeldef.ties) -> the model-state key
    # they alias; written again on its storage, as torch.save of the tied model holds them.
    restore: Mapping[str, str] = field(default_factory=dict)
    # convert --dequantize: quantized weights are written as dense tensors of their `cast` dtype
    # (else run() writes each as its stored parts, bit-identical: rewrite/quantized.py).
    dequantize: bool = False
    hf_layout: bool = False  # a GGUF written as transformers loads it (convert to a Hugging Face folder)
    unwrap: str = ""  # an EMA wrapper's prefix (AveragedModel's 'module.') the model_from keys lose: renames has them

    def __post_init__(self) -> None:
        # Callers may pass sets, dicts and lists: freeze copies so nothing can change the plan later.
        object.__setattr__(self, "drop", frozenset(self.drop))
        object.__setattr__(self, "cast", MappingProxyType(dict(self.cast)))
        object.__setattr__(self, "renames", MappingProxyType(dict(self.renames)))
        object.__setattr__(self, "tied", MappingProxyType(dict(self.tied)))
        object.__setattr__(self, "restore", MappingProxyType(dict(self.restore)))
        object.__setattr__(self, "device_notes", tuple(self.device_notes))
        object.__setattr__(self, "changes", tuple(self.changes))
        object.__setattr__(self, "notes", tuple(self.notes))


def rewrite_note(text: str) -> Note:
    """A note of what a rewrite keeps, drops or cannot do (printed on stderr, listed in its JSON)."""
    return Note(NoteKind.REWRITE, text)


def open_input(path: str, key: str | None, model: ModelChoice | None = None) -> Opened:
    """The input of a rewrite, opened as every command opens one (classified against `model` when
    given), its raw tree kept, and a note of what the rewrite cannot keep."""
    from ..open import open_checkpoint

    opened = open_checkpoint(path, key, model, keep_raw=True)
    assert opened.raw is not None
    if not opened.raw.untrusted:
        return opened
    note = rewrite_note("the input references non-allowlisted globals; they are kept only if written as .pt values "
                        "statecli can re-create")
    return dataclasses.replace(opened, checkpoint=opened.checkpoint.with_notes([note]))


def load(path: str, key: str | None, model: Any = None) -> tuple[Checkpoint, RawCheckpoint]:
    """The checkpoint (classified against `model`, a modeldef.ModelInfo, when given) and its raw tree."""
    opened = open_input(path, key)
    assert opened.raw is not None
    return (with_model(opened.checkpoint, model) if model is not None else opened.checkpoint), opened.raw


def plan(ck: Checkpoint, raw: RawCheckpoint, spec: Spec, model: Any = None) -> Plan:
    """The plan for one spec; `model` (a modeldef.ModelInfo) guards strict loading of the output."""
    if isinstance(spec, CastSpec):
        return plan_cast(ck, raw, spec, model)
    if isinstance(spec, StripSpec):
        return plan_strip(ck, raw, spec, model)
    if isinstance(spec, MoveSpec):
        return plan_move(ck, raw, spec)
    if isinstance(spec, ConvertSpec):
        return plan_convert(ck, raw, spec)
    raise TypeError(f"not a rewrite spec: {spec!r}")


def _compile(patterns: Iterable[str], flag: str) -> list[re.Pattern[str]]:
    return [user_regex(p, flag) for p in patterns]


def _cast_target(text: str) -> str:
    target = dtype_name(text)
    if target not in CAST_TARGETS:
        raise UsageError(None, f"--dtype {text!r} is not a floating dtype statecli casts to",
                         "choose half, bfloat16, float32 or float64")
    return target


def plan_cast(ck: Checkpoint, raw: RawCheckpoint, spec: CastSpec, model: Any = None) -> Plan:
    target = _cast_target(spec.dtype)
    if spec.only is not None and spec.only not in tuple(CastOnly):
        raise UsageError(None, "--only takes params or buffers")
    only = CastOnly(spec.only) if spec.only is not None else None
    keeps = _compile(spec.keep, "--keep")
    cast: dict[EntryKey, str] = {}
    notes: list[Note] = []
    skipped_int = 0
    buffer_kinds = (Kind.BUFFER, Kind.BUFFER_NP)
    for e in ck.entries:
        t = e.tensor
        if t is None or t.dtype == target:
            continue
        if t.quant is not None:
            continue  # a quantized weight: its parts are written as stored (rewrite/quantized.py says so)
        if not is_floating(t.dtype):
            skipped_int += 1
            continue
        if e.group and e.kind == Kind.OPTIMIZER and not spec.include_optimizer:
            continue
        if e.group and e.kind not in (Kind.PARAMETER, *buffer_kinds, Kind.OPTIMIZER):
            continue
        if only is CastOnly.PARAMS and e.kind != Kind.PARAMETER or only is CastOnly.BUFFERS and e.kind not in buffer_kinds:
            continue
        if spec.keep_buffers and e.kind in buffer_kinds or any(k.search(e.name) for k in keeps):
            continue
        if t.layout != Layout.STRIDED or t.device == "meta":
            notes.append(rewrite_note(f"{e.name}: {t.layout} {t.device} tensor left as {t.dtype}"))
            continue
        cast[entry_key(e)] = target
    if skipped_int:
        notes.append(rewrite_note(f"{skipped_int} integer, bool or complex tensor(s) are never cast"))
    if not spec.include_optimizer and any(e.kind == Kind.OPTIMIZER and e.tensor is not None for e in ck.entries):
        notes.append(rewrite_note("optimizer state left as is (add --include-optimizer to cast it)"))
    return Plan(ck=ck, raw=raw, cast=cast, notes=tuple(notes), model=model)


def plan_strip(ck: Checkpoint, raw: RawCheckpoint, spec: StripSpec, model: Any = None) -> Plan:
    pats, keeps = _compile(spec.patterns, "--pattern"), _compile(spec.keep, "--keep")
    required = set(model.state_keys) if model is not None else set()
    roles = {c.name: c.role for c in ck.containers}
    if spec.non_persistent and not any(e.kind == Kind.BUFFER_NP and not e.evidence.inferred for e in ck.entries):
        if not any(e.evidence.exact for e in ck.entries):
            raise UsageError(ck.path, "--non-persistent needs to know the model: pass --model or --hf-config (or use a "
                                     "full-model file)")
    model_from = None
    if spec.keep_ema_as_model:
        ema_groups = [g for g, r in roles.items() if r == Role.EMA]
        if not ema_groups:
            raise UsageError(ck.path, "--keep-ema-as-model: no EMA container found",
                             "name it with --key on inspect to check, e.g. model_ema")
        model_from = ema_groups[0]
    drop: set[EntryKey] = set()
    changes: list[Change] = []
    notes: list[Note] = []
    unwrap: dict[str, str] = {}
    if model_from:
        unwrap, counters = ema_as_model(ck, model_from)
        counted = [e for e in ck.entries if e.group == model_from and e.name[len(model_from) + 1:] in counters]
        drop |= {entry_key(e) for e in counted}
        changes += [Change(e.name, ChangeKind.REMOVED, "EMA update counter", e.tensor.nbytes if e.tensor else 0)
                    for e in counted]
        if unwrap:
            notes.append(rewrite_note(f"the EMA wrapper's prefix {EMA_WRAPPER_PREFIX!r} (AveragedModel, timm "
                                      "ModelEmaV2) is removed from its keys"))
    for e in ck.entries:
        why = _strip_reason(e, spec, roles, pats, model_from)
        if why is None or any(k.search(e.name) for k in keeps):
            continue
        if required and e.group == "" and e.name in required and not spec.force:
            raise UsageError(ck.path, f"{e.name!r} is required by the model definition ({why})",
                             "add --force to strip it anyway")
        drop.add(entry_key(e))
        changes.append(Change(e.name, ChangeKind.REMOVED, why, e.tensor.nbytes if e.tensor else 0))
    if spec.buffers and not required:
        notes.append(rewrite_note("buffers removed without a model definition: the output will not load with "
                                  "load_state_dict(strict=True) into a model that registers them (pass --model to be "
                                  "told which)"))
    if model_from:
        notes.append(rewrite_note(f"the EMA weights in {model_from!r} replace the model state"))
    if not changes and not model_from:
        notes.append(rewrite_note("nothing matched: the output equals the input"))
    # --force means "I know the output will not load strictly": no model check after writing.
    return Plan(ck=ck, raw=raw, drop=frozenset(drop), model_from=model_from, changes=tuple(changes),
                notes=tuple(notes), model=None if spec.force else model, renames=unwrap,
                unwrap=_wrapper_prefix(unwrap))


# The keys an EMA wrapper adds around a copy of the model: torch.optim.swa_utils.AveragedModel and timm's
# ModelEmaV2/V3 hold the copy as `.module` (keys `module.*`); AveragedModel also counts updates in `n_averaged`.
EMA_WRAPPER_PREFIX = "module."
EMA_COUNTERS = ("n_averaged",)


def ema_as_model(ck: Checkpoint, group: str) -> tuple[dict[str, str], list[str]]:
    """How the EMA copy in `group` becomes the model state: its keys unwrapped (`module.x` -> `x`) and the
    counters to drop, so the output loads into the model with load_state_dict(strict=True). A UsageError when
    the EMA does not hold the model state's keys (an EMA of another model, or of part of it)."""
    cut = len(group) + 1
    model_keys = {e.name for e in ck.entries if e.group == ""}
    inner = [e.name[cut:] for e in ck.entries if e.group == group]
    counters = [n for n in inner if n in EMA_COUNTERS and n not in model_keys]
    weights = [n for n in inner if n not in counters]
    # A model saved wrapped too (DDP's own `module.`) already matches its EMA's keys: nothing to unwrap then.
    wrapped = (bool(weights) and all(n.startswith(EMA_WRAPPER_PREFIX) for n in weights)
               and set(weights) != model_keys)
    unwrap = {n: n[len(EMA_WRAPPER_PREFIX):] for n in weights} if wrapped else {}
    got = {unwrap.get(n, n) for n in weights}
    if model_keys and got != model_keys:
        missing, extra = sorted(model_keys - got), sorted(got - model_keys)
        told = [f"{len(missing)} model key(s) missing, e.g. {missing[0]!r}"] if missing else []
        told += [f"{len(extra)} key(s) the model lacks, e.g. {extra[0]!r}"] if extra else []
        raise UsageError(ck.path, f"--keep-ema-as-model: the EMA in {group!r} does not match the model state "
                                  f"({'; '.join(told)})", f"compare them: statecli inspect {ck.path} --key {group}")
    return unwrap, counters


def _wrapper_prefix(unwrap: Mapping[str, str]) -> str:
    return EMA_WRAPPER_PREFIX if unwrap else ""


def _strip_reason(e: Entry, spec: StripSpec, roles: Mapping[str, Role], pats: list[re.Pattern[str]],
                  model_from: str | None) -> str | None:
    group_role = roles.get(e.group) if e.group else Role.MODEL
    if spec.optimizer and group_role in (Role.OPTIMIZER, Role.SCHEDULER):
        return f"{group_role} state"
    if (spec.ema or spec.keep_ema_as_model) and group_role == Role.EMA and e.group != model_from:
        return "EMA state"
    if spec.buffers and e.kind in (Kind.BUFFER, Kind.BUFFER_NP):
        return str(e.kind)
    if spec.non_persistent and e.kind == Kind.BUFFER_NP:
        return "non-persistent buffer"
    if any(p.search(e.name) for p in pats):
        return "pattern"
    return None


def plan_move(ck: Checkpoint, raw: RawCheckpoint, spec: MoveSpec) -> Plan:
    device = spec.device
    if not re.fullmatch(r"cpu|meta|cuda(:\d+)?|mps|xpu(:\d+)?", device):
        raise UsageError(None, f"--device {device!r} is not cpu, cuda:N, mps or xpu:N")
    if device == "meta":
        raise UsageError(None, "--device meta would drop every value; use inspect on the original instead")
    tensors = [e.tensor for e in ck.entries if e.tensor is not None]
    moved = sorted({t.device for t in tensors if t.device != device})
    changes = [Change(f"{sum(1 for t in tensors if t.device == dev)} tensor(s)", ChangeKind.MOVED, f"{dev} -> {device}")
               for dev in moved]
    notes: list[Note] = []
    device_notes: list[Note] = []
    if not moved:
        notes.append(rewrite_note(f"every tensor is already saved on {device}"))
    elif device != "cpu":
        device_notes.append(rewrite_note(f"the output loads only where {device} exists (or with torch.load's map_location)"))
    # Whether anything moves depends on the output format (safetensors and DCP record no device):
    # run() keeps the "moved" changes and device notes only for a .pt output.
    return Plan(ck=ck, raw=raw, location=device, changes=tuple(changes), notes=tuple(notes),
                device_notes=tuple(device_notes))


def plan_convert(ck: Checkpoint, raw: RawCheckpoint, spec: ConvertSpec | None = None) -> Plan:
    # A GGUF block-quantized tensor (no writer keeps its GGML type) is written as the values the GGUF
    # reader dequantizes (a planned cast); other schemes keep their packed pieces (convert --dequantize).
    to = _cast_target((spec or ConvertSpec()).dequantize_to)
    cast = {entry_key(e): to for e in ck.entries
            if e.tensor is not None and e.tensor.quant is not None and e.tensor.quant.method == GGUF_METHOD}
    notes = (rewrite_note(f"{len(cast)} quantized tensor(s) written dequantized as {to}"),) if cast else ()
    return Plan(ck=ck, raw=raw, cast=cast, notes=notes)


def saved_bytes(plan: Plan) -> int:
    """Storage bytes the dropped entries free: storage shared with a kept entry stays."""
    tensors = [e for e in plan.ck.entries if e.tensor is not None]
    kept = [e for e in tensors if entry_key(e) not in plan.drop]
    return unique_storage_bytes(tensors)[1] - unique_storage_bytes(kept)[1]


def removed_sharing(plan: Plan) -> tuple[int, int]:
    """(bytes of the removed tensors whose storage a kept tensor also uses, so removing them frees none
    of it; bytes by which the other removed tensors repeat a storage among themselves, counted once)."""
    removed: list[Entry] = []
    kept_storages: set[StorageId] = set()
    for e in plan.ck.entries:
        t = e.tensor
        if t is None or t.device == "meta":  # a meta tensor holds no bytes
            continue
        if entry_key(e) in plan.drop:
            removed.append(e)
        elif t.storage_id is not None:
            kept_storages.add(t.storage_id)

    def on_kept(e: Entry) -> bool:
        return e.tensor is not None and e.tensor.storage_id in kept_storages

    views, storages = unique_storage_bytes([e for e in removed if not on_kept(e)])
    return sum(e.tensor.nbytes for e in removed if e.tensor is not None and on_kept(e)), max(views - storages, 0)
