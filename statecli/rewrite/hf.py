"""Hugging Face folders as outputs: tied keys left out as save_pretrained does, the rest of the input
folder copied (folder.py), the config's dtype updated by a cast (in place too)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection
from typing import Any

from ..errors import BadInput
from ..io.atomic import atomic_file, open_output
from ..io.limits import read_json_file
from .encode import tied_aliases
from .folder import copy_folder
from .plan import Plan, entry_key
from .result import WriteLog
from .tree import model_items

_DTYPE_KEYS = ("torch_dtype", "dtype")  # transformers 5 writes `dtype`, older ones `torch_dtype`: either may be read
_MODEL_FILES = ("model.safetensors", "pytorch_model.bin")  # the weights a folder's config.json describes


def source_folder(path: str) -> str | None:
    """The folder of an input that is a Hugging Face model folder (a config.json beside the weights)."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None


def ties_kept(folder: str) -> bool:
    """False when the config unties the embeddings: then a shared storage is a coincidence to keep."""
    try:
        config = read_json_file(os.path.join(folder, "config.json"))
    except (OSError, ValueError):
        return True
    return not (isinstance(config, dict) and config.get("tie_word_embeddings") is False)


def without_tied(plan: Plan, folder: str | None) -> Plan:
    """The plan of a safetensors output with tied keys left out, each stored once. In a Hugging Face
    folder (`folder`) the first name keeps the tensor, as save_pretrained does (the embedding,
    registered before the head); in other outputs the name safetensors.torch.save_model keeps (the
    first in sorted order). from_pretrained and load_model re-tie the others; `plan.duplicate_tied`
    keeps every key as a copy instead, for plain load_state_dict(load_file(...), strict=True)."""
    if plan.duplicate_tied or folder is not None and not ties_kept(folder):
        return plan
    items = model_items(plan, WriteLog())
    aliases = tied_aliases(plan, items, keep="first" if folder is not None else "sorted")
    if not aliases:
        return plan
    entries = dict(items)
    drop = {entry_key(entries[name]) for name in aliases}
    how = ("as save_pretrained writes them; from_pretrained re-ties them" if folder is not None else
           "as safetensors.torch.save_model writes them; load_model and from_pretrained re-tie them, "
           "--duplicate-tied stores copies for plain load_file")
    shown = ", ".join(f"{a} -> {t}" for a, t in list(aliases.items())[:3]) + (", ..." if len(aliases) > 3 else "")
    note = f"{len(aliases)} tied key(s) stored once ({how}): {shown}"
    return dataclasses.replace(plan, drop=plan.drop | drop, notes=plan.notes + (note,), tied={**plan.tied, **aliases})


def copy_companions(src: str, dst: str, rewritten: Collection[str], cast_to: str | None, log: WriteLog,
                    dequantized: bool = False) -> None:
    """Everything of the folder `src` but the weights rewritten into `dst` (folder.py), config.json
    with its dtype set to `cast_to` and, where the weights were `dequantized`, no quantization_config."""
    write = (lambda s, d: _write_config(s, d, cast_to, log, dequantized)) if cast_to or dequantized else None
    copy_folder(src, dst, rewritten, log, write)
    _note_code(os.path.join(src, "config.json"), log)


def config_in_place(plan: Plan, log: WriteLog) -> None:
    """After an in-place cast of a Hugging Face folder's weight file: its config.json's dtype set to
    the cast's (atomically), so from_pretrained loads the folder in the dtype it now holds."""
    folder = source_folder(plan.ck.path)
    casts = set(plan.cast.values())
    if folder is None or len(casts) != 1 or os.path.basename(plan.ck.path) not in _MODEL_FILES:
        return
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as exc:
        log.note(f"config.json not updated (unreadable: {exc}); set its dtype to {casts.pop()} by hand")
        return
    with atomic_file(path) as tmp:
        _write_config(path, tmp, casts.pop(), log)


def _note_code(config: str, log: WriteLog) -> None:
    """The output's config.json names custom code as the input's did: said, never run."""
    from ..formats.hfconfig import config_code

    try:
        code = config_code(config) if os.path.isfile(config) else None
    except BadInput:
        return
    if code is not None:
        log.note(code.note())


def _write_config(src: str, dst: str, dtype: str | None, log: WriteLog, dequantized: bool = False) -> None:
    config = read_json_file(src)
    if isinstance(config, dict) and dtype:
        _set_dtype(config, dtype)
        for sub in config.values():  # composite models (text_config, vision_config) carry their own
            if isinstance(sub, dict) and any(k in sub for k in _DTYPE_KEYS):
                _set_dtype(sub, dtype)
        log.note(f"config.json: dtype set to {dtype}")
    if isinstance(config, dict) and dequantized and config.pop("quantization_config", None) is not None:
        log.note("config.json: quantization_config removed (the weights are dequantized)")
    with open_output(dst) as out:
        out.write((json.dumps(config, indent=2) + "\n").encode("utf-8"))


def _set_dtype(config: dict[str, Any], dtype: str) -> None:
    keys = [k for k in _DTYPE_KEYS if k in config] or ["dtype"]
    for k in keys:
        config[k] = dtype
