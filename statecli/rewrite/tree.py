"""What goes into an output: the saved object tree rebuilt with dropped entries removed and tensors
replaced by output leaves, or the flat (name, entry) list of the model state for tensor-only formats."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import BadInput, UsageError
from ..formats.unpickler import DtypeValue, InertSet, NamedValue, StateDict, StubObject, TensorRef
from ..state import Entry, Kind, TensorInfo
from ..units import itemsize
from .plan import Plan, entry_key
from .rename import model_names, renamed_key, renamed_metadata
from .result import WriteLog

PICKLED_MODULE = "(pickled module)"
_SKIP = object()  # a value the output leaves out (named in a note)


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
        if e.group != group or entry_key(e) in plan.drop and not (plan.model_from and e.group == plan.model_from):
            continue
        if ck.container == PICKLED_MODULE and e.kind in (Kind.BUFFER_NP, Kind.ATTRIBUTE):
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


def rebuild(plan: Plan, make: Callable[[Entry], Any], log: WriteLog) -> Any:
    """The saved object with dropped entries removed and each tensor replaced by `make(entry)`. The
    walk names every leaf exactly as load.build does, so plan decisions (by entry name) apply."""
    raw, ck = plan.raw, plan.ck
    if ck.container == PICKLED_MODULE:
        # The class cannot be re-created without running its code: write what model.state_dict()
        # would hold instead, which is what every loader wants.
        return OrderedDict((name, make(e)) for name, e in model_items(plan, log))
    by_name = {(e.group, e.name): e for e in ck.entries}
    container = tuple(ck.container.split(".")) if ck.container else ()
    dropped = _dropped_groups(plan)
    names = set(model_names(plan)) if plan.renames else set()

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
            model_root = bool(plan.renames) and path == container and (in_model or not container)
            out = _new_mapping(x, plan if model_root else None)
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


def _new_mapping(x: Any, renamed: Plan | None = None) -> Any:
    if isinstance(x, StateDict):
        out: Any = OrderedDict()
        meta = x.torch_metadata
        if meta is not None:
            out._metadata = _plain(meta, "_metadata")
            if renamed is not None:
                out._metadata = OrderedDict(renamed_metadata(renamed, out._metadata))
        return out
    return OrderedDict() if isinstance(x, OrderedDict) else {}


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
    if isinstance(x, (StateDict, OrderedDict)):
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
