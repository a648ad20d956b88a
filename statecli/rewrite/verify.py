"""Checking a written output before it is kept: re-read its metadata, compare with the plan, and
(with a model definition) refuse an output that would not load strictly where the input did."""

from __future__ import annotations

import dataclasses

from ..classify import with_model
from ..errors import BadInput, UsageError
from ..load import load_checkpoint
from ..state import Checkpoint, Kind
from ..vocab import Format, ReportProblem, WriteFormat
from .plan import Plan, entry_key


def expected(plan: Plan, fmt: WriteFormat) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Output tensor name -> (dtype, shape) the written file must hold."""
    out = {}
    for e in plan.ck.entries:
        if e.tensor is None or entry_key(e) in plan.drop:
            continue
        if plan.ck.is_pickled_module and e.kind in (Kind.BUFFER_NP, Kind.ATTRIBUTE):
            continue
        flat = fmt is not WriteFormat.PT or plan.ck.format is Format.PT2  # a .pt2 goes out as its state dict alone
        if flat and e.group and e.group != plan.model_from:
            continue
        if plan.model_from and not e.group:
            continue  # the EMA replaces the model state
        name = e.name
        if plan.model_from and e.group == plan.model_from:
            name = e.name[len(plan.model_from) + 1:] if e.name.startswith(plan.model_from + ".") else e.name
        if e.group == (plan.model_from or ""):
            name = plan.renames.get(name, name)
        out[name] = (plan.cast.get(entry_key(e), e.tensor.dtype), e.tensor.shape)
    return out


def verify_file(plan: Plan, written: str, fmt: WriteFormat, shown_as: str) -> Checkpoint:
    """The written file re-read (named as its final path), or BadInput when it differs from the plan."""
    # Re-read with the container the input was read with (--key), so names line up entry for entry.
    key = None
    if fmt is WriteFormat.PT and not plan.model_from and not plan.ck.is_pickled_module:
        # A .pt2's chosen program is written as the flat state dict torch.export.load gives (run.py).
        key = "." if plan.ck.format is Format.PT2 else plan.ck.container or "."
    after = load_checkpoint(written, key=key)
    got = _written(after)
    want = expected(plan, fmt)
    missing = [n for n in want if n not in got or got[n] != want[n]]
    if missing:
        raise BadInput(shown_as, f"verification failed: {missing[0]!r} is not as planned in the written file; "
                                 "nothing was kept")
    check_model(plan, after, shown_as)
    return dataclasses.replace(after, path=shown_as, files=(shown_as,))


def verify_index(plan: Plan, index: str) -> None:
    after = load_checkpoint(index)
    got = _written(after)
    want = expected(plan, WriteFormat.SAFETENSORS)
    bad = [n for n in want if got.get(n) != want[n]]
    if bad:
        raise BadInput(index, f"verification failed for {bad[0]!r}; nothing was kept")
    check_model(plan, after, index)


def _written(after: Checkpoint) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype, shape) of every tensor written, a quantized weight's stored parts included
    (the plan writes those: rewrite/quantized.py)."""
    got = {}
    for e in after.entries:
        t = e.tensor
        if t is None:
            continue
        got[e.name] = (t.dtype, t.shape)
        if t.quant is not None:
            got |= {name: (p.dtype, p.shape) for (_, name), p in zip(t.quant.parts, t.quant.tensors)}
    return got


def check_model(plan: Plan, after: Checkpoint, shown_as: str) -> None:
    """With --model: refuse an output that would not load strictly when the input did."""
    if plan.model is None:
        return
    from ..modeldef import load_report

    if any(x.blocking for x in load_report(plan.ck, plan.model)):
        return
    # A tie the output leaves out (save_model's convention) is re-tied by load_model, not a failure.
    lines = [x for x in load_report(with_model(after, plan.model), plan.model)
             if x.blocking and not (x.problem is ReportProblem.MISSING and x.key in plan.tied)]
    if lines:
        raise UsageError(shown_as, "the output would not load with load_state_dict(strict=True) although the input "
                         f"does ({lines[0].key}: {lines[0].problem}); nothing was written",
                         "add --force to strip required keys anyway" if lines[0].problem is ReportProblem.MISSING else None)
