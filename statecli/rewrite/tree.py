"""What goes into an output: the saved object tree rebuilt with dropped entries removed and tensors
replaced by output leaves, or the flat (name, entry) list of the model state for tensor-only formats."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import BadInput, UsageError
from ..formats.torchzip import torch_value
from ..pickle.graph import MAX_DEPTH, tensor_holders
from ..pickle.unpickler import DtypeValue, InertSet, NamedValue, StateDict, StubObject, TensorRef
from ..state import Entry, Kind, TensorInfo
from ..units import itemsize
from .plan import Plan, entry_key
from .rename import alias_name, model_names, renamed_key, renamed_metadata
from .result import WriteLog

_SKIP = object()  # a value the output leaves out (named in a note)
_NEW = object()  # a container to rebuild here (not a cycle or a reference to one rebuilt before)
_TUPLE = object()  # a tuple being rebuilt: it cannot be handed out before it exists


def out_dtype(plan: Plan, e: Entry) -> str:
    assert e.tensor is not None
    return plan.cast.get(entry_key(e), e.tensor.dtype)


def out_nbytes(plan: Plan, e: Entry) -> int:
    assert e.tensor is not None
    return e.tensor.numel * itemsize(out_dtype(plan, e))


def model_items(plan: Plan, log: WriteLog) -> list[tuple[str, Entry]]:
    """Flat (output name, entry) pairs of the model state: what safetensors and shards hold."""
    ck, group = plan.ck, plan.model_from or ""
    out = []
    dropped_values = 0
    not_state = 0
    for e in ck.entries:
        if e.group != group or entry_key(e) in plan.drop:
            continue
        if ck.is_pickled_module and e.kind in (Kind.BUFFER_NP, Kind.ATTRIBUTE):
            not_state += 1  # not in state_dict(): the module rebuilds them
            continue
        if e.tensor is None:
            dropped_values += 1
            continue
        name = e.name[len(group) + 1:] if group and e.name.startswith(group + ".") else e.name
        out.append((plan.renames.get(name, name), e))
    others = {e.group for e in ck.entries if e.group and e.group != group}
    if others:
        log.note(f"containers not written (a flat tensor file holds the model state only): {', '.join(sorted(others))}")
    if dropped_values:
        log.note(f"{dropped_values} non-tensor value(s) of the model state are not written")
    if not_state:
        log.note(f"a full-model pickle: wrote its state_dict() (parameters and persistent buffers); "
                 f"{not_state} non-persistent buffer(s) / tensor attribute(s) are not state")
    return out


def with_restored_ties(plan: Plan, log: WriteLog) -> Plan:
    """The plan of a .pt output with the tied keys the input leaves out but records (safetensors
    metadata, a Hugging Face config's tie rules) written again, each on its target's storage, so the
    output loads with load_state_dict(strict=True) as torch.save of the tied model does."""
    from ..modeldef.ties import recorded_aliases

    if plan.model_from or plan.ck.is_pickled_module:
        return plan
    kept = {e.name for e in plan.ck.entries if e.group == "" and e.tensor is not None and entry_key(e) not in plan.drop}
    aliases = [a for a in recorded_aliases(plan.ck).values() if a.target in kept]
    if not aliases:
        return plan
    shown = ", ".join(f"{alias_name(plan, a.name)} = {alias_name(plan, a.target)}" for a in aliases[:3])
    log.note(f"{len(aliases)} tied key(s) the input leaves out ({', '.join(sorted({str(a.source) for a in aliases}))}) "
             f"written again, sharing storage with the key they alias as torch.save of the tied model does: {shown}"
             + (", ..." if len(aliases) > 3 else ""))
    return dataclasses.replace(plan, restore={a.name: a.target for a in aliases})


def rebuild(plan: Plan, make: Callable[[Entry], Any], log: WriteLog, real: bool | None = None) -> Any:
    """The saved object with dropped entries removed and each tensor replaced by `make(entry)`. The
    walk names every leaf exactly as load.build does, so plan decisions (by entry name) apply.
    torch's dtypes and layouts come out as TorchGlobal stand-ins for the .pt writer (formats/torchzip.py), or (`real`, by default
    when `make` says so with a `real_torch_values` attribute) as torch's own objects for DCP."""
    raw, ck = plan.raw, plan.ck
    if real is None:
        real = bool(getattr(make, "real_torch_values", False))
    if ck.is_pickled_module:
        # The class cannot be re-created without running its code: write what model.state_dict()
        # would hold instead, which is what every loader wants.
        return OrderedDict((name, make(e)) for name, e in model_items(plan, log))
    by_name = {(e.group, e.name): e for e in ck.entries}
    container = tuple(ck.container.split(".")) if ck.container else ()
    dropped = _dropped_groups(plan)
    names = set(model_names(plan)) if plan.renames else set()

    # The saved object is a graph: each container is rebuilt once per group and reused where load
    # listed a name as a reference (a cycle, or a container shared past its repeat budget), so sharing
    # and cycles survive into the output and the work grows with the objects, not with their paths.
    holders = tensor_holders(raw.root, ck.path)
    built: dict[tuple[str, int], Any] = {}
    building: dict[int, Any] = {}
    plain_memo: dict[int, Any] = {}

    def leaf(x: Any, group: str, name: str) -> Any:
        if isinstance(x, (TensorRef, TensorInfo)):
            e = by_name.get((group, name))
            if e is None:
                raise BadInput(ck.path, f"internal: no entry for tensor {name!r}")
            return make(e)
        return _plain(x, name, plain_memo, real=real)

    def again(x: Any, path: tuple[str, ...], group: str, name: str) -> Any:
        """The output already made for container `x` when it is not rebuilt afresh here, else _NEW."""
        if len(path) > MAX_DEPTH:
            raise UsageError(ck.path, f"{name!r} nests more than {MAX_DEPTH} levels deep; statecli does not re-create it",
                             "write --to safetensors")
        if id(x) in building:  # a cycle: the output refers back to its own container
            if building[id(x)] is _TUPLE:
                raise UsageError(ck.path, f"{name!r} is a tuple that contains itself; statecli does not re-create it",
                                 "write --to safetensors")
            return building[id(x)]
        e = by_name.get((group, name))
        if e is not None and e.tensor is None and e.value_type in ("shared reference", "cycle"):
            if (group, id(x)) not in built:
                raise UsageError(ck.path, f"{name!r} is the same object as a key this rewrite removes",
                                 "remove or keep both")
            return built[(group, id(x))]
        return _NEW

    def keep(x: Any, group: str, out: Any) -> Any:
        """`out`, or the output rebuilt before for the same container when they are interchangeable
        (the same plan decisions applied under both names): the output then shares it too."""
        first = built.setdefault((group, id(x)), out)
        return first if first is not out and _same(first, out) else out

    def walk(x: Any, path: tuple[str, ...], group: str, prefix: str, top: bool, in_model: bool) -> Any:
        if not in_model and container and path == container:
            if plan.model_from:
                return walk(raw.root[plan.model_from], path, plan.model_from, plan.model_from, True, True)
            return walk(x, path, "", "", True, True)
        if isinstance(x, Mapping) and x and (top or id(x) in holders):
            made = again(x, path, group, prefix)
            if made is not _NEW:
                return made
            model_root = bool(plan.renames) and path == container and (in_model or not container)
            out = _new_mapping(x, plan if model_root else None, real)
            building[id(x)] = out
            try:
                fill(out, x, path, group, prefix, model_root, in_model)
            finally:
                del building[id(x)]
            if plan.restore and path == container and (in_model or not container):
                for alias, target in plan.restore.items():  # the target's own entry: its storage and cast
                    if alias_name(plan, alias) not in out:
                        out[alias_name(plan, alias)] = make(by_name[("", target)])
            return keep(x, group, out)
        if isinstance(x, (list, tuple)) and id(x) in holders:
            made = again(x, path, group, prefix)
            if made is not _NEW:
                return made
            seq: list[Any] = []
            building[id(x)] = seq if isinstance(x, list) else _TUPLE
            try:
                seq.extend(walk(v, path + (str(i),), group, f"{prefix}.{i}" if prefix else str(i), False, in_model)
                           for i, v in enumerate(x))
            finally:
                del building[id(x)]
            return keep(x, group, seq if isinstance(x, list) else tuple(seq))
        return leaf(x, group, prefix)

    def fill(out: Any, x: Mapping[Any, Any], path: tuple[str, ...], group: str, prefix: str, model_root: bool,
             in_model: bool) -> None:
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
                log.note("non-tensor values of a torch.distributed.checkpoint input are not carried over "
                         "(their pickled bytes are not loaded)")
                continue
            out[renamed_key(plan, k, names) if model_root else k] = value

    return walk(raw.root, (), "", "", True, False)


def _dropped_groups(plan: Plan) -> set[str]:
    groups = {e.group for e in plan.ck.entries if e.group}
    return {g for g in groups if all(entry_key(e) in plan.drop for e in plan.ck.entries if e.group == g)}


def _new_mapping(x: Any, renamed: Plan | None = None, real: bool = False) -> Any:
    if isinstance(x, StateDict):
        out: Any = OrderedDict()
        meta = x.torch_metadata
        if meta is not None:
            out._metadata = _plain(meta, "_metadata", real=real)
            if renamed is not None:
                out._metadata = OrderedDict(renamed_metadata(renamed, out._metadata))
        return out
    return OrderedDict() if isinstance(x, OrderedDict) else {}


def _same(a: Any, b: Any) -> bool:
    """Two rebuilt containers hold the same items, judged one level deep: their child containers were
    rebuilt first and are already the same object where they can be; tensor leaves compare by field."""
    if type(a) is not type(b) or getattr(a, "_metadata", None) != getattr(b, "_metadata", None):
        return False
    if isinstance(a, Mapping):
        return list(a) == list(b) and all(_same_leaf(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(_same_leaf(x, y) for x, y in zip(a, b))


def _same_leaf(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(getattr(a, f.name) is getattr(b, f.name) or getattr(a, f.name) == getattr(b, f.name)
                   for f in dataclasses.fields(a))
    return isinstance(a, (bool, int, float, complex, str, bytes)) and a == b


def _plain(x: Any, name: str, memo: dict[int, Any] | None = None, depth: int = 0, real: bool = False) -> Any:
    """A plain Python value for re-pickling, torch's dtypes and layouts as TorchGlobal stand-ins
    (`real`: the torch objects themselves, for torch's own writers); refuses objects statecli only
    holds as stubs. Each container is converted once (`memo`): shared stays shared in the output, a
    cycle stays a cycle."""
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
        return x
    if isinstance(x, bytearray):
        return bytearray(x)
    if isinstance(x, (DtypeValue, NamedValue)):
        g = torch_value(x.name if isinstance(x, DtypeValue) else x.qualname.removeprefix("torch."))
        return g.resolve() if real else g
    if isinstance(x, StubObject):
        raise UsageError(None, f"{name!r} holds a pickled {x.class_name}, which statecli does not re-create",
                         "strip it (--pattern) or write --to safetensors")
    if type(x).__name__ == "_BytesItem":  # a DCP non-tensor value: its bytes are a pickle we do not load
        return _SKIP
    if not isinstance(x, (InertSet, Mapping, list, tuple)):
        raise UsageError(None, f"{name!r} holds a {type(x).__name__} statecli cannot write to .pt")
    memo = {} if memo is None else memo
    if id(x) in memo:
        if memo[id(x)] is _TUPLE:
            raise UsageError(None, f"{name!r} is a tuple that contains itself; statecli does not re-create it",
                             "strip it (--pattern) or write --to safetensors")
        return memo[id(x)]
    if depth > MAX_DEPTH:
        raise UsageError(None, f"{name!r} nests more than {MAX_DEPTH} levels deep; statecli does not re-create it",
                         "strip it (--pattern) or write --to safetensors")
    d = depth + 1
    if isinstance(x, Mapping):
        out: Any = OrderedDict() if isinstance(x, (StateDict, OrderedDict)) else {}
        memo[id(x)] = out
        for k, v in x.items():
            out[k] = _plain(v, f"{name}.{k}", memo, d, real)
        return out
    if isinstance(x, list):
        memo[id(x)] = out = []
        out.extend(_plain(v, name, memo, d, real) for v in x)
        return out
    memo[id(x)] = _TUPLE  # a tuple or set exists only once its items do
    if isinstance(x, InertSet):
        memo[id(x)] = out = {_plain(v, name, memo, d, real) for v in x}
        return out
    memo[id(x)] = out = tuple(_plain(v, name, memo, d, real) for v in x)
    return out
