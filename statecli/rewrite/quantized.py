"""Rewrites of quantized checkpoints. A quantized weight is one logical entry while planning (strip
removes it whole; cast never casts it); before writing, each becomes its stored parts again, so
packed integers, scales and zeros go out byte for byte as they came in. `convert --dequantize`
instead writes each as an ordinary tensor of the asked dtype, read through the dequantizers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from ..errors import UsageError
from ..formats.quant.config import Method
from ..state import Entry, Evidence, Source, TensorInfo
from ..units import CAST_TARGETS, dtype_name
from .plan import Plan, entry_key, rewrite_note


def quantized_entries(plan: Plan) -> list[Entry]:
    return [e for e in plan.ck.entries if e.tensor is not None and e.tensor.quant is not None]


def as_stored(plan: Plan) -> Plan:
    """The plan with every quantized logical entry replaced by its stored parts (entries and the raw
    tree alike), decisions on the logical entry carried to its parts; said in a note."""
    root = plan.raw.root
    # Parts that are no entries of the file (a torchao subclass's qdata/scale) cannot be written apart:
    # such weights stay logical, and run() refuses them unless dequantized or dropped.
    quant = [e for e in quantized_entries(plan) if _stored_apart(e, root)]
    if not quant:
        return plan
    expanded: list[Entry] = []
    drop = set(plan.drop)
    for e in plan.ck.entries:
        q = e.tensor.quant if e.tensor is not None else None
        if q is None or e not in quant:
            expanded.append(e)
            continue
        parts = [Entry(name, part, kind=e.kind, evidence=Evidence(Source.RULE, f"stored part of {e.name}"), group=e.group)
                 for (_, name), part in zip(q.parts, q.tensors)]
        expanded += parts
        if entry_key(e) in drop:
            drop |= {entry_key(p) for p in parts}
    renames = _part_renames(plan, quant)
    if isinstance(root, Mapping):
        root = _stored_root(root)
    kept = [e for e in quant if entry_key(e) not in plan.drop]
    methods = ", ".join(sorted({e.tensor.quant.method for e in kept if e.tensor is not None and e.tensor.quant}))
    notes = plan.notes + ((rewrite_note(f"{len(kept)} quantized weight(s) ({methods}) written as stored: packed "
                                        "integers, scales and zeros bit-identical, never cast"),) if kept else ())
    return dataclasses.replace(plan, ck=dataclasses.replace(plan.ck, entries=tuple(expanded)),
                               raw=dataclasses.replace(plan.raw, root=root), drop=frozenset(drop), notes=notes,
                               renames=renames)


def _part_renames(plan: Plan, quant: list[Entry]) -> dict[str, str]:
    """plan.renames plus the stored parts of each renamed quantized weight, renamed as the weight
    is ("model.x.weight" -> "x.weight" renames "model.x.qweight" -> "x.qweight"): the changed head of
    the weight's name is changed on each part, and the renames must agree with that. UsageError where
    they do not (a rename of the ".weight" tail alone) or a part's new name is taken."""
    from .rename import rename_function

    out = dict(plan.renames)
    rename = rename_function(plan.rename_spec) if plan.rename_spec else None
    names = {e.name for e in plan.ck.entries} | {n for e in quant if e.tensor and e.tensor.quant for _, n in e.tensor.quant.parts}
    for e in quant:
        new = plan.renames.get(e.name)
        if new is None or e.tensor is None or e.tensor.quant is None:
            continue
        tail = 0
        while tail < min(len(e.name), len(new)) and e.name[-1 - tail] == new[-1 - tail]:
            tail += 1
        head, to = e.name[:len(e.name) - tail], new[:len(new) - tail]
        for _, part in e.tensor.quant.parts:
            moved = to + part[len(head):]
            if not part.startswith(head) or (rename is not None and rename(part) != moved) or (moved != part and moved in names):
                raise UsageError(plan.ck.path, f"renaming the quantized weight {e.name!r} to {new!r} cannot rename its "
                                               f"stored part {part!r} the same way",
                                 "rename a prefix of the module path, or convert --dequantize first")
            out[part] = moved
    return out


def _stored_apart(e: Entry, root: object) -> bool:
    """Whether the file holds each part of quantized `e` as an entry of its own (a flat state dict)."""
    q = e.tensor.quant if e.tensor is not None else None
    return q is not None and bool(q.parts) and not q.setting("inline") and isinstance(root, Mapping) and e.name in root


def _compute(e: Entry) -> str:
    q = e.tensor.quant if e.tensor is not None else None
    return q.compute_dtype if q is not None and q.compute_dtype in CAST_TARGETS else "float32"


def _stored_root(root: Mapping[object, object]) -> dict[object, object]:
    """A flat state dict with each logical quantized tensor back as its parts, in its place."""
    out = type(root)() if not isinstance(root, dict) or type(root) is not dict else {}
    for k, v in root.items():
        if isinstance(v, TensorInfo) and v.quant is not None and v.quant.parts and not v.quant.setting("inline"):
            for (_, name), part in zip(v.quant.parts, v.quant.tensors):
                out[name] = part  # type: ignore[index]
        else:
            out[k] = v  # type: ignore[index]
    if hasattr(root, "pickled_state"):
        out.pickled_state = root.pickled_state  # type: ignore[attr-defined]
    return out  # type: ignore[return-value]


def dequantized(plan: Plan, dtype: str | None) -> Plan:
    """The plan with every quantized weight written as a dense tensor of `dtype` (its dequantized
    values; None: each weight's compute dtype); the rest as planned. UsageError where `dtype` is no
    floating cast target."""
    target = dtype_name(dtype) if dtype is not None else None
    if dtype is not None and target not in CAST_TARGETS:
        raise UsageError(None, f"--dtype {dtype!r} is not a floating dtype to dequantize to",
                         "choose half, bfloat16, float32 or float64")
    quant = quantized_entries(plan)
    if not quant:
        return dataclasses.replace(plan, notes=plan.notes + (rewrite_note("nothing is quantized: --dequantize changed nothing"),))
    cast = dict(plan.cast) | {entry_key(e): target or _compute(e) for e in quant}
    note = (f"{len(quant)} quantized weight(s) dequantized to {target or 'their compute dtype'}: the output is an "
            "ordinary checkpoint "
            "(a Hugging Face folder's config.json loses its quantization_config)")
    return dataclasses.replace(plan, cast=cast, notes=plan.notes + (rewrite_note(note),), dequantize=True)


_PLAIN = '{"_type": "Tensor"}'  # torchao's flatten_tensor_state_dict record of a plain tensor


def torchao_metadata(plan: Plan, meta: dict[str, str]) -> dict[str, str]:
    """A safetensors input's metadata for the output, brought up to date for torchao's records
    (flatten_tensor_state_dict: one record per logical name, and "tensor_names"): a renamed weight's
    record and its place in tensor_names move to the new name (torchao's unflatten finds the record,
    and the parts it names, by the logical name); where `convert --dequantize` writes a torchao weight
    dense, its record says a plain tensor, so no loader looks for the parts no longer written."""
    if "tensor_names" not in meta:
        return meta
    dense = {e.name for e in quantized_entries(plan) if plan.dequantize and e.tensor is not None
             and e.tensor.quant is not None and e.tensor.quant.method == Method.TORCHAO}
    out = {plan.renames.get(k, k): _PLAIN if k in dense else v for k, v in meta.items()}
    try:
        names = json.loads(meta["tensor_names"])
    except ValueError:
        return out
    if isinstance(names, list):
        out["tensor_names"] = json.dumps([plan.renames.get(n, n) if isinstance(n, str) else n for n in names])
    return out

