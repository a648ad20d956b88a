"""convert GGUF -> a Hugging Face folder: the tensors under the names transformers' GGUF loading gives
them, in its layout (llama.cpp's permutations undone), and a config.json as transformers builds it from
the GGUF's metadata (formats/gguf/hf.py); the tensors transformers skips are left out, said so."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..io.atomic import atomic_file, open_output
from ..units import dtype_name
from .plan import Plan, entry_key, rewrite_note
from .spec import Target

if TYPE_CHECKING:
    from ..formats.gguf.hfview import HfView

WEIGHTS = "model.safetensors"


def is_folder_output(output: str | None) -> bool:
    """-o names a folder (ends in a separator, is one, or has no checkpoint extension)."""
    if output is None or output == "-" or "://" in output:
        return False
    low = output.lower()
    return output.endswith(("/", os.sep)) or os.path.isdir(output) or not low.endswith((".safetensors", ".pt", ".pth",
                                                                                          ".bin", ".ckpt", ".tar"))


def gguf_hf_names(plan: Plan, target: Target, dtype: str | None) -> tuple[Plan, Target, Callable[[], None] | None]:
    """A GGUF's convert under transformers' names (no --to): to a Hugging Face folder where -o names a
    folder (the plan, the target and what writes config.json once the weights are written); to one
    .safetensors file with the folder's names and values, or GGUF names and a note where transformers
    does not load this GGUF; else all as they were."""
    out = target.output
    if target.to is not None or out is None:
        return plan, target, None
    if is_folder_output(out):
        folder = out
        plan, target, config = hf_folder_plan(plan, target)
        return plan, target, partial(write_config, folder, config, dtype_name(dtype or "bfloat16") or "bfloat16")
    if not out.lower().endswith(".safetensors"):
        return plan, target, None
    from ..formats.gguf.hfview import hf_view

    view = hf_view(plan.ck.path)
    if view is None:
        note = rewrite_note(f"GGUF names kept, not Hugging Face's: {_unloaded_why()}")
        return dataclasses.replace(plan, notes=plan.notes + (note,)), target, None
    return _hf_plan(plan, view), target, None


def hf_folder_plan(plan: Plan, target: Target) -> tuple[Plan, Target, dict[str, object]]:
    """The plan over transformers' tensors (`_hf_plan`), the target `folder/model.safetensors`, and the
    config.json content; a UsageError where transformers cannot load this GGUF."""
    from ..formats.gguf.hfview import hf_view

    assert target.output is not None
    view = hf_view(plan.ck.path)
    if view is None:
        raise UsageError(plan.ck.path, f"cannot write a Hugging Face folder: {_unloaded_why()}",
                         "write GGUF names to one file instead: -o model.safetensors")
    plan = _hf_plan(plan, view)
    plan = dataclasses.replace(plan, notes=plan.notes + (rewrite_note("config.json as transformers builds it from "
                                                                      "the GGUF's metadata"),))
    if not target.dry_run:
        os.makedirs(target.output, exist_ok=True)
    return plan, dataclasses.replace(target, output=os.path.join(target.output, WEIGHTS)), view.model.config


def _unloaded_why() -> str:
    from ..formats.gguf.hf import transformers_here

    return ("transformers does not load this GGUF's architecture" if transformers_here() else
            "it needs transformers and torch (pip install transformers)")


def _hf_plan(plan: Plan, view: HfView) -> Plan:
    """The plan over transformers' tensors (formats/gguf/hfview.py: its names, shapes and the tensors its
    processor builds), each quantized source dequantized to the --dtype; what it leaves out, said."""
    from ..formats.gguf.hfview import require_fit

    require_fit(view, plan.ck.path)  # a tensor the config cannot hold: one line, never an invented shape
    notes = plan.notes + (rewrite_note(f"{len(view.tensors)} tensor(s) under transformers' names and layout (its "
                                       f"{type(view.model.layout.processor).__name__})"),)
    if view.skipped:
        notes += (rewrite_note(f"{len(view.skipped)} tensor(s) transformers does not load left out: "
                               f"{', '.join(view.skipped[:3])}" + (", ..." if len(view.skipped) > 3 else "")),)
    entries = {e.name: e for e in plan.ck.entries if e.tensor is not None}
    hf_entries, cast = [], {}
    for t in view.tensors:
        dtypes = {plan.cast[k] for g in t.sources if (k := entry_key(entries[g])) in plan.cast}
        e = dataclasses.replace(entries[t.sources[0]], name=t.name, tensor=t.info)
        hf_entries.append(e)
        if dtypes:  # a quantized source: the --dtype it is dequantized to
            cast[entry_key(e)] = dtypes.pop()
    ck = dataclasses.replace(plan.ck, entries=tuple(hf_entries))
    return dataclasses.replace(plan, ck=ck, drop=frozenset(), cast=cast, notes=notes, hf_layout=True)


def write_config(folder: str, config: dict[str, object], dtype: str) -> None:
    """config.json beside the weights, with the dtype they were written in; atomically."""
    path = os.path.join(folder, "config.json")
    with atomic_file(path) as tmp, open_output(tmp) as out:
        out.write((json.dumps({**config, "dtype": dtype}, indent=2, sort_keys=True) + "\n").encode("utf-8"))


__all__ = ["WEIGHTS", "gguf_hf_names", "hf_folder_plan", "is_folder_output", "write_config"]
