"""cast, strip, move and convert: each builds a Plan over the checkpoint's entries; one engine then
streams the result, one storage at a time, into a .pt, .safetensors, sharded or DCP output."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import units
from ..errors import BadInput, UsageError
from ..formats import RawCheckpoint
from ..formats.safetensors import ALIASES_KEY, TO_SAFETENSORS
from ..formats.unpickler import DtypeValue, InertSet, NamedValue, StateDict, StubObject, TensorRef
from ..load import load_checkpoint, load_with_raw
from ..state import Checkpoint, Entry, Kind, Role, TensorInfo, contiguous_stride, unique_storage_bytes
from ..units import CAST_TARGETS, dtype_name, is_floating, itemsize

PICKLED_MODULE = "(pickled module)"
CHUNK_BYTES = 64 << 20  # bytes moved per step: the engine's working set beside the largest tensor
_STORAGE_CLASS = {"float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
                  "bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
                  "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
                  "complex128": "ComplexDoubleStorage", "complex64": "ComplexFloatStorage"}


@dataclass
class Change:
    name: str
    what: str
    detail: str = ""
    nbytes: int = 0
    overflow: int = 0
    underflow: int = 0


def entry_key(e: Entry) -> tuple[str, str]:
    """Plan decisions are keyed by container and name: 'scale' in the model state and a top-level
    'scale' beside it are different entries."""
    return (e.group, e.name)


@dataclass
class Plan:
    """Decisions by entry name: drop, cast to a dtype, and a device to write for every storage."""

    ck: Checkpoint
    raw: RawCheckpoint
    drop: set[tuple[str, str]] = field(default_factory=set)  # key(entry)
    cast: dict[tuple[str, str], str] = field(default_factory=dict)  # key(entry) -> dtype
    location: str | None = None
    model_from: str | None = None  # a container whose entries replace the model state (EMA promotion)
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: Any = None  # modeldef.ModelInfo: an output must load strictly wherever the input did
    compact: bool = False  # write views of larger storages as their own storages (shards)
    storages: dict[Any, Any] = field(default_factory=dict, repr=False)  # input storage -> _OutStorage, per file


@dataclass
class RewriteResult:
    plan: Plan
    output: str | None
    out_format: str | None
    before: Checkpoint
    after: Checkpoint | None
    dry_run: bool
    strict_failed: bool = False


# -- plans ---------------------------------------------------------------------------------------

def _compile(patterns: list[str] | None, flag: str) -> list[re.Pattern[str]]:
    out = []
    for p in patterns or []:
        try:
            out.append(re.compile(p))
        except re.error as exc:
            raise UsageError(None, f"{flag} {p!r} is not a valid regular expression: {exc}") from exc
    return out


def plan_cast(ck: Checkpoint, raw: RawCheckpoint, dtype: str, only: str | None, keep: list[str] | None,
              keep_buffers: bool, include_optimizer: bool) -> Plan:
    target = dtype_name(dtype)
    if target not in CAST_TARGETS:
        raise UsageError(None, f"--dtype {dtype!r} is not a floating dtype statecli casts to",
                         "choose half, bfloat16, float32 or float64")
    if only not in (None, "params", "buffers"):
        raise UsageError(None, "--only takes params or buffers")
    keeps = _compile(keep, "--keep")
    plan = Plan(ck, raw)
    skipped_int = 0
    for e in ck.entries:
        t = e.tensor
        if t is None or t.dtype == target:
            continue
        if not is_floating(t.dtype):
            skipped_int += 1
            continue
        if e.group and e.kind == Kind.OPTIMIZER and not include_optimizer:
            continue
        if e.group and e.kind not in (Kind.PARAMETER, Kind.BUFFER, Kind.BUFFER_NP, Kind.OPTIMIZER):
            continue
        if only == "params" and e.kind != Kind.PARAMETER or only == "buffers" and e.kind not in (Kind.BUFFER, Kind.BUFFER_NP):
            continue
        if keep_buffers and e.kind in (Kind.BUFFER, Kind.BUFFER_NP) or any(k.search(e.name) for k in keeps):
            continue
        if t.layout != "strided" or t.device == "meta":
            plan.notes.append(f"{e.name}: {t.layout} {t.device} tensor left as {t.dtype}")
            continue
        plan.cast[entry_key(e)] = target
    if skipped_int:
        plan.notes.append(f"{skipped_int} integer, bool or complex tensor(s) are never cast")
    if not include_optimizer and any(e.kind == Kind.OPTIMIZER and e.tensor is not None for e in ck.entries):
        plan.notes.append("optimizer state left as is (add --include-optimizer to cast it)")
    return plan


def plan_strip(ck: Checkpoint, raw: RawCheckpoint, buffers: bool, non_persistent: bool, optimizer: bool, ema: bool,
               keep_ema_as_model: bool, patterns: list[str] | None, keep: list[str] | None,
               required: set[str] | None, force: bool) -> Plan:
    pats, keeps = _compile(patterns, "--pattern"), _compile(keep, "--keep")
    plan = Plan(ck, raw)
    roles = {c.name: c.role for c in ck.containers}
    if non_persistent and not any(e.kind == Kind.BUFFER_NP and not e.evidence.inferred for e in ck.entries):
        if not any(e.evidence.exact for e in ck.entries):
            raise UsageError(ck.path, "--non-persistent needs to know the model: pass --model (or use a full-model file)")
    ema_groups = [g for g, r in roles.items() if r == Role.EMA]
    if keep_ema_as_model:
        if not ema_groups:
            raise UsageError(ck.path, "--keep-ema-as-model: no EMA container found",
                             "name it with --key on inspect to check, e.g. model_ema")
        plan.model_from = ema_groups[0]
    for e in ck.entries:
        group_role = roles.get(e.group) if e.group else Role.MODEL
        why = None
        if optimizer and group_role == Role.OPTIMIZER:
            why = "optimizer state"
        elif (ema or keep_ema_as_model) and group_role == Role.EMA and e.group != plan.model_from:
            why = "EMA state"
        elif buffers and e.kind in (Kind.BUFFER, Kind.BUFFER_NP):
            why = e.kind
        elif non_persistent and e.kind == Kind.BUFFER_NP:
            why = "non-persistent buffer"
        elif any(p.search(e.name) for p in pats):
            why = "pattern"
        if why is None or any(k.search(e.name) for k in keeps):
            continue
        if required and e.group == "" and e.name in required and not force:
            raise UsageError(ck.path, f"{e.name!r} is required by the model definition ({why})",
                             "add --force to strip it anyway")
        plan.drop.add(entry_key(e))
        plan.changes.append(Change(e.name, "removed", why, e.tensor.nbytes if e.tensor else 0))
    if buffers and not required:
        _note(plan, "buffers removed without a model definition: the output will not load with "
                    "load_state_dict(strict=True) into a model that registers them (pass --model to be told which)")
    if plan.model_from:
        plan.notes.append(f"the EMA weights in {plan.model_from!r} replace the model state")
    if not plan.changes and not plan.model_from:
        plan.notes.append("nothing matched: the output equals the input")
    return plan


def saved_bytes(plan: Plan) -> int:
    """Storage bytes the dropped entries free: storage shared with a kept entry stays."""
    tensors = [e for e in plan.ck.entries if e.tensor is not None]
    kept = [e for e in tensors if entry_key(e) not in plan.drop]
    return unique_storage_bytes(tensors)[1] - unique_storage_bytes(kept)[1]


def plan_move(ck: Checkpoint, raw: RawCheckpoint, device: str) -> Plan:
    if not re.fullmatch(r"cpu|meta|cuda(:\d+)?|mps|xpu(:\d+)?", device):
        raise UsageError(None, f"--device {device!r} is not cpu, cuda:N, mps or xpu:N")
    if device == "meta":
        raise UsageError(None, "--device meta would drop every value; use inspect on the original instead")
    plan = Plan(ck, raw, location=device)
    moved = sorted({e.tensor.device for e in ck.entries if e.tensor is not None and e.tensor.device != device})
    for dev in moved:
        n = sum(1 for e in ck.entries if e.tensor is not None and e.tensor.device == dev)
        plan.changes.append(Change(f"{n} tensor(s)", "moved", f"{dev} -> {device}"))
    if not moved:
        plan.notes.append(f"every tensor is already saved on {device}")
    elif device != "cpu":
        plan.notes.append(f"the output loads only where {device} exists (or with torch.load(map_location=...))")
    return plan


# -- output ---------------------------------------------------------------------------------------

def output_format(output: str, to: str | None, max_shard_size: int | None, in_format: str) -> str:
    if to:
        if to not in ("pt", "safetensors", "dcp"):
            raise UsageError(None, f"--to {to!r}: choose pt, safetensors or dcp")
        return to
    low = output.lower()
    if low.endswith(".safetensors"):
        return "safetensors"
    if low.endswith((".pt", ".pth", ".bin", ".ckpt", ".tar")):
        return "pt"
    if max_shard_size:
        return "safetensors" if "safetensors" in in_format else "pt"
    raise UsageError(output, "cannot tell the output format from the name", "end it in .pt or .safetensors, or pass --to")


def parse_size(text: str) -> int:
    n = units.parse_size(text)
    if n is None:
        raise UsageError(None, f"--max-shard-size {text!r} is not a size like 5GB or 500MiB")
    return n


def run(plan: Plan, path: str, output: str | None, in_place: bool, to: str | None, max_shard_size: str | None,
        dry_run: bool, strict: bool = False, drop_unsupported: bool = False) -> RewriteResult:
    """Validate the target, then write the plan atomically and verify the result by re-reading it."""
    ck = plan.ck
    if output is None and not in_place:
        raise UsageError(None, "give -o/--output PATH (or --in-place to replace the input)")
    if output is not None and in_place:
        raise UsageError(None, "-o/--output and --in-place exclude each other")
    target = ck.path if in_place else str(output)
    if in_place and (len(ck.files) != 1 or os.path.isdir(ck.path)):
        raise UsageError(ck.path, "--in-place works on single-file checkpoints only")
    if in_place and (max_shard_size or to):
        raise UsageError(ck.path, "--in-place keeps the file's name and format: it does not combine with "
                                  "--to or --max-shard-size", "write to a new path with -o")
    shard = parse_size(max_shard_size) if max_shard_size else None
    fmt = output_format(target, to, shard, ck.format) if not in_place or to else (
        "safetensors" if ck.format == "safetensors" else "pt")
    if not in_place:
        for f in ck.files + [ck.path]:
            if os.path.exists(target) and os.path.exists(f) and os.path.samefile(f, target):
                raise UsageError(target, "is the input; statecli never overwrites its input without --in-place")
    unsupported = [e for e in ck.entries if e.tensor is not None and entry_key(e) not in plan.drop
                   and (e.tensor.layout not in ("strided",) or e.tensor.device == "meta")]
    if unsupported:
        if not drop_unsupported:
            names = [e.name for e in unsupported]
            raise UsageError(ck.path, f"{len(names)} tensor(s) have a layout statecli cannot rewrite "
                             f"({', '.join(names[:4])}{'...' if len(names) > 4 else ''})",
                             "add --drop-unsupported to leave them out")
        for e in unsupported:
            plan.drop.add(entry_key(e))
            plan.changes.append(Change(e.name, "removed", "unsupported layout"))
    if dry_run:
        return RewriteResult(plan, target, fmt, ck, None, True)
    if fmt == "dcp":
        after = _write_dcp(plan, target, strict)
    elif shard:
        after = _write_sharded(plan, target, fmt, shard, in_place, strict)
    else:
        after = _write_single(plan, target, fmt, strict)
    result = RewriteResult(plan, target, fmt, ck, after, False)
    return result


def _expected(plan: Plan, fmt: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    out = {}
    for e in plan.ck.entries:
        if e.tensor is None or entry_key(e) in plan.drop:
            continue
        if plan.ck.container == PICKLED_MODULE and e.kind in (Kind.BUFFER_NP, Kind.ATTRIBUTE):
            continue
        if fmt != "pt" and e.group and e.group != plan.model_from:
            continue
        name = e.name
        if plan.model_from and e.group == plan.model_from:
            name = e.name[len(plan.model_from) + 1:] if e.name.startswith(plan.model_from + ".") else e.name
        out[name] = (plan.cast.get(entry_key(e), e.tensor.dtype), e.tensor.shape)
    return out


def _verify(plan: Plan, written: str, fmt: str, shown_as: str) -> Checkpoint:
    after = load_checkpoint(written, key="." if fmt == "pt" and plan.ck.container == "" else None)
    got = {e.name: (e.tensor.dtype, e.tensor.shape) for e in after.entries if e.tensor is not None}
    want = _expected(plan, fmt)
    missing = [n for n in want if n not in got or got[n] != want[n]]
    if missing:
        raise BadInput(shown_as, f"verification failed: {missing[0]!r} is not as planned in the written file; "
                                 "nothing was kept")
    _check_model(plan, after, shown_as)
    after.path = shown_as
    after.files = [shown_as]
    return after


def _write_single(plan: Plan, target: str, fmt: str, strict: bool) -> Checkpoint:
    from ..formats.atomic import atomic_file

    with atomic_file(target) as tmp:
        with open(tmp, "wb") as f:
            if fmt == "safetensors":
                _write_safetensors(plan, f, _model_items(plan))
            else:
                _write_pt(plan, f, _rebuild_tree(plan))
        _refuse_if_strict(plan, strict)
        return _verify(plan, tmp, fmt, target)


def _refuse_if_strict(plan: Plan, strict: bool) -> None:
    if strict and any(c.overflow or c.underflow for c in plan.changes):
        raise UsageError(plan.ck.path, "--strict: some values overflow or underflow the target dtype "
                                       "(listed above); nothing was written")


def _write_sharded(plan: Plan, target: str, fmt: str, shard: int, in_place: bool, strict: bool) -> Checkpoint:
    from ..formats.atomic import atomic_dir

    items = _model_items(plan)
    groups: list[list[tuple[str, Entry]]] = [[]]
    size = 0
    for name, e in items:
        n = plan_nbytes(plan, e)
        if groups[-1] and size + n > shard:
            groups.append([])
            size = 0
        groups[-1].append((name, e))
        size += n
    total = len(groups)
    ext, index = ("safetensors", "model.safetensors.index.json") if fmt == "safetensors" else (
        "bin", "pytorch_model.bin.index.json")
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    with atomic_dir(target, replace=in_place) as tmp:
        wmap: dict[str, str] = {}
        total_size = 0
        for i, group in enumerate(groups, 1):
            fname = f"{stem}-{i:05d}-of-{total:05d}.{ext}"
            with open(os.path.join(tmp, fname), "wb") as f:
                if fmt == "safetensors":
                    # Every key of the weight map must be in its shard: tied tensors are written as
                    # copies here (Hugging Face drops them from the map instead).
                    _write_safetensors(plan, f, group, dedupe=False)
                else:
                    plan.compact = True
                    _write_pt(plan, f, OrderedDict((name, _out_tensor_leaf(plan, e)) for name, e in group))
            for name, e in group:
                wmap[name] = fname
                total_size += plan_nbytes(plan, e)
        with open(os.path.join(tmp, index), "w", encoding="utf-8") as f:
            json.dump({"metadata": {"total_size": total_size}, "weight_map": wmap}, f, indent=2)
        _refuse_if_strict(plan, strict)
        _verify_sharded(plan, os.path.join(tmp, index), fmt)
    plan.notes.append(f"wrote {total} shard(s) of at most {shard} bytes and {index}")
    after = load_checkpoint(target)
    return after


def _verify_sharded(plan: Plan, index: str, fmt: str) -> None:
    after = load_checkpoint(index)
    got = {e.name: (e.tensor.dtype, e.tensor.shape) for e in after.entries if e.tensor is not None}
    want = {k: v for k, v in _expected(plan, "safetensors").items()}
    bad = [n for n in want if got.get(n) != want[n]]
    if bad:
        raise BadInput(index, f"verification failed for {bad[0]!r}; nothing was kept")
    _check_model(plan, after, index)


def _check_model(plan: Plan, after: Checkpoint, shown_as: str) -> None:
    """With --model: refuse an output that would not load strictly when the input did."""
    if plan.model is None:
        return
    from ..modeldef import classify_with_model, load_report

    if any(x.blocking for x in load_report(plan.ck, plan.model)):
        return
    classify_with_model(after, plan.model)
    lines = [x for x in load_report(after, plan.model) if x.blocking]
    if lines:
        raise UsageError(shown_as, "the output would not load with load_state_dict(strict=True) although the input "
                         f"does ({lines[0].key}: {lines[0].problem}); nothing was written",
                         "add --force to strip required keys anyway" if lines[0].problem == "missing" else None)


def _write_dcp(plan: Plan, target: str, strict: bool) -> Checkpoint:
    import torch
    import torch.distributed.checkpoint as dcp

    from ..formats.atomic import atomic_dir
    from ..formats.values import value_reader

    with atomic_dir(target) as tmp, value_reader(plan.ck) as reader:
        def tensor(e: Entry) -> Any:  # a view of the mapped input; DCP's writer streams it out
            assert e.tensor is not None
            t = reader.tensor(e.tensor)
            if entry_key(e) not in plan.cast:
                return t
            target_dtype = getattr(torch, plan.cast[entry_key(e)])
            out = t.to(target_dtype)
            change = Change(e.name, "cast", f"{e.tensor.dtype} -> {plan.cast[entry_key(e)]}")
            if t.numel() and t.dtype.is_floating_point:
                _count_losses(change, t.reshape(-1), out.reshape(-1), target_dtype, torch)
            plan.changes.append(change)
            return out

        # The whole checkpoint, wrappers included: DCP holds nested state (optimizer, counters) too.
        sd = _rebuild_tree(plan, tensor)
        _refuse_if_strict(plan, strict)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "torch.distributed is disabled ... single process": as intended
            dcp.save(sd, storage_writer=dcp.FileSystemWriter(tmp), no_dist=True)  # type: ignore[call-arg]
    plan.notes.append("DCP output written with torch.distributed.checkpoint's FileSystemWriter")
    return load_checkpoint(target)


# -- what goes into the output --------------------------------------------------------------------

def plan_nbytes(plan: Plan, e: Entry) -> int:
    assert e.tensor is not None
    dtype = plan.cast.get(entry_key(e), e.tensor.dtype)
    return e.tensor.numel * itemsize(dtype)


def _model_items(plan: Plan) -> list[tuple[str, Entry]]:
    """Flat (output name, entry) pairs of the model state: what safetensors and shards hold."""
    group = plan.model_from or ""
    out = []
    dropped_values = 0
    not_state = 0
    for e in plan.ck.entries:
        if e.group != group or entry_key(e) in plan.drop and not (plan.model_from and e.group == plan.model_from):
            continue
        if plan.ck.container == PICKLED_MODULE and e.kind in (Kind.BUFFER_NP, Kind.ATTRIBUTE):
            not_state += 1  # not in state_dict(): the module rebuilds them
            continue
        if e.tensor is None:
            dropped_values += 1
            continue
        name = e.name[len(group) + 1:] if group and e.name.startswith(group + ".") else e.name
        out.append((name, e))
    others = {e.group for e in plan.ck.entries if e.group and e.group != group}
    if others:
        _note(plan, f"containers not written (a flat tensor file holds the model state only): "
                    f"{', '.join(sorted(others))}")
    if dropped_values:
        _note(plan, f"{dropped_values} non-tensor value(s) of the model state are not written")
    if not_state:
        _note(plan, f"a full-model pickle: wrote its state_dict() (parameters and persistent buffers); "
                    f"{not_state} non-persistent buffer(s) / tensor attribute(s) are not state")
    return out


def _note(plan: Plan, text: str) -> None:
    if text not in plan.notes:
        plan.notes.append(text)


@dataclass(eq=False)
class _OutStorage:
    key: str
    dtype: str
    location: str
    numel: int
    source: TensorInfo
    cast: bool
    view: bool = False  # holds only `source`'s view, made contiguous (not its whole input storage)


class _OutTensor:
    """Pickles exactly as torch.save pickles a tensor, pointing at an _OutStorage."""

    def __init__(self, storage: _OutStorage, info: TensorInfo, requires_grad: bool) -> None:
        self.storage, self.info, self.requires_grad = storage, info, requires_grad

    def __reduce_ex__(self, protocol: Any) -> Any:
        import torch

        stride = self.info.stride if self.info.stride is not None else contiguous_stride(self.info.shape)
        offset = self.info.storage_offset
        if self.storage.view:
            stride, offset = contiguous_stride(self.info.shape), 0
        args: tuple[Any, ...] = (self.storage, offset, tuple(self.info.shape), tuple(stride),
                                 self.requires_grad, OrderedDict())
        if self.storage.dtype in _STORAGE_CLASS:
            return torch._utils._rebuild_tensor_v2, args
        return torch._utils._rebuild_tensor_v3, args + (getattr(torch, self.storage.dtype),)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _OutStorage):
            import torch

            if obj.dtype in _STORAGE_CLASS:
                return ("storage", getattr(torch, _STORAGE_CLASS[obj.dtype]), obj.key, obj.location, obj.numel)
            return ("storage", torch.UntypedStorage, obj.key, obj.location, obj.numel * itemsize(obj.dtype))
        return None


def _storage_for(plan: Plan, e: Entry, storages: dict[Any, _OutStorage]) -> _OutStorage:
    t = e.tensor
    assert t is not None
    whole = t.storage_nbytes is None or (t.is_contiguous and t.storage_offset == 0 and t.nbytes == t.storage_nbytes)
    own = plan.compact and not whole  # a shard holds the view alone, not the whole storage it came from
    key: Any = (t.source, t.storage_key) if t.storage_key is not None else ("anon", id(e))
    if own:
        key = (*key, t.storage_offset, t.shape, t.stride)
    st = storages.get(key)
    dtype = plan.cast.get(entry_key(e), t.storage_dtype or t.dtype)
    if st is None:
        sdtype = t.storage_dtype or t.dtype
        nbytes = t.storage_nbytes if t.storage_nbytes is not None else t.nbytes
        numel = t.numel if own else nbytes // itemsize(sdtype)
        st = _OutStorage(str(len(storages)), dtype if not own else plan.cast.get(entry_key(e), t.dtype),
                         plan.location or t.device, numel, t, entry_key(e) in plan.cast, view=own)
        storages[key] = st
    elif st.cast != (entry_key(e) in plan.cast):
        raise UsageError(plan.ck.path, f"{e.name!r} shares its storage with a tensor that is treated differently",
                         "cast or keep both (adjust --keep/--only)")
    return st


def _out_tensor_leaf(plan: Plan, e: Entry) -> _OutTensor:
    storages = plan.storages
    assert e.tensor is not None
    return _OutTensor(_storage_for(plan, e, storages), e.tensor, e.tensor.requires_grad)


def _rebuild_tree(plan: Plan, tensor_leaf: Any = None) -> Any:
    """The saved object with dropped entries removed and tensors replaced by output records. The walk
    names every leaf exactly as load.build does, so plan decisions (by entry name) apply."""
    raw, ck = plan.raw, plan.ck

    def make(e: Entry) -> Any:
        return tensor_leaf(e) if tensor_leaf is not None else _out_tensor_leaf(plan, e)

    if ck.container == PICKLED_MODULE:
        # The class cannot be re-created without running its code: write what model.state_dict()
        # would hold instead, which is what every loader wants.
        return OrderedDict((name, make(e)) for name, e in _model_items(plan))
    by_name = {(e.group, e.name): e for e in ck.entries}
    container = tuple(ck.container.split(".")) if ck.container else ()
    dropped = _dropped_groups(plan)

    def leaf(x: Any, group: str, name: str) -> Any:
        if isinstance(x, (TensorRef, TensorInfo)):
            e = by_name.get((group, name))
            if e is None:
                raise BadInput(ck.path, f"internal: no entry for tensor {name!r}")
            return make(e)
        return _plain(x, name)

    def walk(x: Any, path: tuple[str, ...], group: str, prefix: str, top: bool, in_model: bool) -> Any:
        if not in_model and container and path == container:
            if plan.model_from:
                return walk(raw.root[plan.model_from], path, plan.model_from, plan.model_from, True, True)
            return walk(x, path, "", "", True, True)
        if isinstance(x, Mapping) and x and (top or _has_tensor(x)):
            out = _new_mapping(x)
            for k, v in x.items():
                g = group
                if not path and container:  # the root's keys are the containers
                    g = str(k)
                    if g == plan.model_from or g in dropped:
                        continue
                name = f"{prefix}.{k}" if prefix else str(k)
                if (g, name) in plan.drop:
                    continue
                value = walk(v, path + (str(k),), g, name, not path and bool(container), in_model)
                if value is _SKIP:
                    _note(plan, "non-tensor values of a torch.distributed.checkpoint input are not carried over "
                                "(their pickled bytes are not loaded)")
                    continue
                out[k] = value
            return out
        if isinstance(x, (list, tuple)) and _has_tensor(x):
            items = [walk(v, path + (str(i),), group, f"{prefix}.{i}" if prefix else str(i), False, in_model)
                     for i, v in enumerate(x)]
            return tuple(items) if isinstance(x, tuple) else items
        return leaf(x, group, prefix)

    return walk(raw.root, (), "", "", True, False)


def _dropped_groups(plan: Plan) -> set[str]:
    groups = {e.group for e in plan.ck.entries if e.group}
    return {g for g in groups if all(entry_key(e) in plan.drop for e in plan.ck.entries if e.group == g)}


def _new_mapping(x: Any) -> Any:
    if isinstance(x, StateDict):
        out: Any = OrderedDict()
        meta = x.torch_metadata
        if meta is not None:
            out._metadata = _plain(meta, "_metadata")
        return out
    return OrderedDict() if isinstance(x, OrderedDict) else {}


_SKIP = object()  # a value the output leaves out (named in a note)


def _has_tensor(x: Any) -> bool:
    if isinstance(x, (TensorRef, TensorInfo)):
        return True
    if isinstance(x, Mapping):
        return any(_has_tensor(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(v) for v in x)
    return False


def _plain(x: Any, name: str) -> Any:
    """A real Python/torch value for re-pickling; refuses objects statecli only holds as stubs."""
    import torch

    if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
        return x
    if isinstance(x, bytearray):
        return bytearray(x)
    if isinstance(x, DtypeValue):
        return getattr(torch, x.name)
    if isinstance(x, NamedValue):
        return getattr(torch, x.qualname.removeprefix("torch."))
    if isinstance(x, InertSet):
        return {_plain(v, name) for v in x}
    if isinstance(x, StateDict):
        out: Any = OrderedDict((k, _plain(v, f"{name}.{k}")) for k, v in x.items())
        return out
    if isinstance(x, OrderedDict):
        return OrderedDict((k, _plain(v, f"{name}.{k}")) for k, v in x.items())
    if isinstance(x, Mapping):
        return {k: _plain(v, f"{name}.{k}") for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v, name) for v in x]
    if isinstance(x, tuple):
        return tuple(_plain(v, name) for v in x)
    if isinstance(x, StubObject):
        raise UsageError(None, f"{name!r} holds a pickled {x.class_name}, which statecli does not re-create",
                         "strip it (--pattern) or write --to safetensors")
    if type(x).__name__ == "_BytesItem":  # a DCP non-tensor value: its bytes are a pickle we do not load
        return _SKIP
    raise UsageError(None, f"{name!r} holds a {type(x).__name__} statecli cannot write to .pt")


# -- byte streaming -------------------------------------------------------------------------------

def _stream(plan: Plan, reader: Any, info: TensorInfo, cast_to: str | None, change: Change | None,
            whole_storage: bool) -> Iterator[memoryview]:
    """The bytes of a storage (pt) or of one tensor made contiguous (safetensors), cast on the way,
    in chunks of CHUNK_BYTES so memory stays bounded by the chunk, not the checkpoint."""
    import torch

    src = reader.storage(info) if whole_storage else reader.tensor(info)
    mapped = info.data_offset is not None and (whole_storage or src.is_contiguous())
    base = 0
    if mapped:
        assert info.data_offset is not None
        base = info.data_offset + (0 if whole_storage else info.storage_offset * src.element_size())
    if not whole_storage and not src.is_contiguous():
        src = src.contiguous()  # bounded by this one tensor
    flat = src.reshape(-1)
    step = max(1, CHUNK_BYTES // max(1, flat.element_size()))
    target = getattr(torch, cast_to) if cast_to else None
    # Range, not bit width, decides whether a cast can lose values: bfloat16 -> float16 is 16 -> 16
    # bits but overflows above 65504 and underflows below 6e-8.
    lossy = target is not None and target.is_floating_point and src.dtype.is_floating_point and (
        torch.finfo(target).max < torch.finfo(src.dtype).max or torch.finfo(target).tiny > torch.finfo(src.dtype).tiny)
    try:
        for start in range(0, flat.numel(), step):
            chunk = flat[start:start + step]
            if target is not None:
                out = chunk.to(target)
                if change is not None and lossy and chunk.numel():
                    _count_losses(change, chunk, out, target, torch)
                chunk = out
            yield memoryview(chunk.contiguous().view(torch.uint8).numpy()) if chunk.numel() else memoryview(b"")
            if mapped:  # this chunk is written: its input pages can go, so RSS stays at one chunk
                esize = flat.element_size()
                reader.release_bytes(info, base + start * esize, base + (start + step) * esize)
    finally:
        reader.release(info)


def _count_losses(change: Change, chunk: Any, out: Any, target: Any, torch: Any) -> None:
    """Overflow: finite values that became inf (or NaN: float8 e4m3 has no inf); underflow: non-zero
    values that became zero. Counted on the chunk in float32 where torch lacks kernels (float8)."""
    if target.itemsize == 1:
        out = out.to(torch.float32)
    if chunk.dtype.itemsize == 1:
        chunk = chunk.to(torch.float32)
    lo, hi = torch.aminmax(chunk)  # one pass, no |x| temporary; NaN anywhere makes both NaN
    top = torch.finfo(target).max
    span = max(-float(lo), float(hi))
    if span > top or span != span:
        if "fn" in str(target):  # float8 "fn" types have no inf: out-of-range values saturate or turn NaN
            change.overflow += int(torch.count_nonzero((chunk.abs() > top) & torch.isfinite(chunk)))
        else:
            change.overflow += int(torch.count_nonzero(torch.isinf(out))) - int(torch.count_nonzero(torch.isinf(chunk)))
    change.underflow += int(torch.count_nonzero(chunk)) - int(torch.count_nonzero(out))


def _write_pt(plan: Plan, f: Any, tree: Any) -> None:
    from ..formats.atomic import ZipWriter
    from ..formats.values import value_reader

    storages: dict[Any, _OutStorage] = plan.storages
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(tree)
    zw = ZipWriter(f)
    zw.write("archive/data.pkl", buf.getvalue(), len(buf.getvalue()))
    zw.write("archive/.format_version", b"1", 1)
    zw.write("archive/.storage_alignment", b"64", 2)
    zw.write("archive/byteorder", b"little", 6)
    changes = {}
    with value_reader(plan.ck) as reader:
        for st in storages.values():
            change = None
            stream_change = None
            if st.cast:
                users = [e for e in plan.ck.entries if e.tensor is not None and e.tensor.storage_key ==
                         st.source.storage_key and e.tensor.source == st.source.source]
                if st.view:
                    users = [e for e in users if e.tensor is st.source]
                change = Change(", ".join(e.name for e in users), "cast",
                                f"{st.source.storage_dtype or st.source.dtype} -> {st.dtype}")
                changes[st.key] = change
                stream_change = change
                if not st.view and not any(_covers(e.tensor) for e in users if e.tensor is not None):
                    # Storage no view covers (a slice of a bigger tensor): count losses on the views
                    # themselves, not on elements nothing refers to.
                    stream_change = None
                    _count_view_losses(change, users, reader, st.dtype)
            size = st.numel * itemsize(st.dtype)
            zw.write(f"archive/data/{st.key}", _stream(plan, reader, st.source, st.dtype if st.cast else None,
                                                       stream_change, not st.view), size)
    zw.write("archive/version", b"3\n", 2)
    sid = str(uuid.uuid4().int).encode()[:40].ljust(40, b"0")
    zw.write("archive/.data/serialization_id", sid, len(sid))
    zw.close()
    plan.changes.extend(changes.values())
    plan.storages = {}  # the next file (shard) numbers its storages afresh


def _covers(t: TensorInfo) -> bool:
    return t.is_contiguous and t.storage_offset == 0 and (t.storage_nbytes is None or t.nbytes == t.storage_nbytes)


def _count_view_losses(change: Change, users: list[Entry], reader: Any, dtype: str) -> None:
    import torch

    target = getattr(torch, dtype)
    seen: set[tuple[Any, ...]] = set()
    for e in users:
        t = e.tensor
        assert t is not None
        ident = (t.storage_offset, t.shape, t.stride)
        if ident in seen or not t.numel:
            continue
        seen.add(ident)
        try:
            v = reader.tensor(t).reshape(-1)
            if v.dtype.is_floating_point:
                _count_losses(change, v, v.to(target), target, torch)
        finally:
            reader.release(t)


def _write_safetensors(plan: Plan, f: Any, items: list[tuple[str, Entry]], dedupe: bool = True) -> None:
    from ..formats.atomic import safetensors_header
    from ..formats.values import value_reader

    # Tied tensors (same storage, offset, shape and stride) are written once; aliases go in metadata.
    first: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, str] = {}
    write: list[tuple[str, Entry]] = []
    for name, e in items:
        t = e.tensor
        assert t is not None
        dtype = plan.cast.get(entry_key(e), t.dtype)
        if dtype not in TO_SAFETENSORS:
            raise UsageError(plan.ck.path, f"{e.name!r} has dtype {dtype}, which safetensors cannot hold")
        key = (t.source, t.storage_key, t.storage_offset, t.shape, t.stride, dtype)
        if dedupe and t.storage_key is not None and key in first:
            aliases[name] = first[key]
            continue
        first[key] = name
        write.append((name, e))
    meta = {k: v for k, v in plan.ck.metadata.items() if k != ALIASES_KEY} if plan.ck.format == "safetensors" else {}
    meta.setdefault("format", "pt")
    if aliases:
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
        plan.notes.append(f"{len(aliases)} tied tensor(s) written once, aliases recorded in metadata: "
                          + ", ".join(f"{a} -> {b}" for a, b in list(aliases.items())[:3]))
    header_items = [(name, TO_SAFETENSORS[plan.cast.get(entry_key(e), e.tensor.dtype)], e.tensor.shape, plan_nbytes(plan, e))
                    for name, e in write if e.tensor is not None]
    f.write(safetensors_header(header_items, meta))
    with value_reader(plan.ck) as reader:
        for name, e in write:
            assert e.tensor is not None
            cast = plan.cast.get(entry_key(e))
            change = Change(name, "cast", f"{e.tensor.dtype} -> {cast}") if cast else None
            written = 0
            for chunk in _stream(plan, reader, e.tensor, cast, change, False):
                f.write(chunk)
                written += chunk.nbytes
            if written != plan_nbytes(plan, e):
                raise BadInput(plan.ck.path, f"{name!r}: wrote {written} bytes, expected {plan_nbytes(plan, e)}")
            if change:
                plan.changes.append(change)


def summary_rows(before: Checkpoint, after: Checkpoint | None) -> list[tuple[str, str, str]]:
    """(what, before, after) rows for the before/after table."""
    def stats(ck: Checkpoint) -> tuple[int, int, str]:
        tensors = [e for e in ck.entries if e.tensor is not None]
        dtypes: dict[str, int] = {}
        for e in tensors:
            assert e.tensor is not None
            dtypes[e.tensor.dtype] = dtypes.get(e.tensor.dtype, 0) + 1
        return len(ck.entries), unique_storage_bytes(tensors)[1], ", ".join(f"{k} x{v}" for k, v in sorted(dtypes.items()))

    b = stats(before)
    a = stats(after) if after else ("-", "-", "-")
    def size(v: Any) -> str:
        return f"{v:,} B" if isinstance(v, int) else str(v)

    return [("entries", str(b[0]), str(a[0])), ("tensor bytes", size(b[1]), size(a[1])), ("dtypes", b[2], a[2])]


def required_keys(info: Any) -> set[str]:
    return set(info.state_keys) if info is not None else set()


def load_for_rewrite(path: str, key: str | None) -> tuple[Checkpoint, RawCheckpoint]:
    ck, raw = load_with_raw(path, key)
    if raw.untrusted and raw.format != "torch.distributed.checkpoint":
        ck.notes.append("the input references non-allowlisted globals; they are kept only if written as .pt "
                        "values statecli can re-create")
    return ck, raw

