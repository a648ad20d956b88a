"""Hugging Face folders as outputs: tied keys left out as save_pretrained does, config.json and the
small companion files (tokenizer, generation config, vocabularies) copied, the config's dtype updated
by a cast."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

from ..formats.atomic import open_output
from ..formats.limits import read_json_file
from ..units import fmt_bytes
from .encode import tied_aliases
from .plan import Plan, entry_key
from .result import WriteLog
from .tree import model_items

COMPANION_CAP = 64 << 20  # a tokenizer.json of a large vocabulary is ~30 MiB; bigger files are data
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".npz", ".npy")
_COMPANIONS = (".json", ".txt", ".model", ".jinja", ".md", ".py", ".tiktoken", ".vocab")
_DTYPE_KEYS = ("torch_dtype", "dtype")


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


def copy_companions(src: str, dst: str, cast_to: str | None, log: WriteLog) -> None:
    """config.json (its dtype set to `cast_to`) and the small non-weight files of `src` into `dst`."""
    copied, skipped = [], []
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if name.startswith(".") or not os.path.isfile(path) or os.path.islink(path):
            continue
        low = name.lower()
        if low.endswith(_WEIGHTS) or low.endswith(".index.json") or not low.endswith(_COMPANIONS):
            continue
        if os.path.getsize(path) > COMPANION_CAP:
            skipped.append(f"{name} ({fmt_bytes(os.path.getsize(path))})")
            continue
        if name == "config.json" and cast_to:
            _write_config(path, os.path.join(dst, name), cast_to, log)
        else:
            with open(path, "rb") as fin, open_output(os.path.join(dst, name)) as fout:
                shutil.copyfileobj(fin, fout)
        copied.append(name)
    if copied:
        log.note(f"copied {len(copied)} companion file(s) of the Hugging Face folder: {', '.join(copied[:6])}"
                 + (", ..." if len(copied) > 6 else ""))
    if skipped:
        log.note(f"not copied (over {fmt_bytes(COMPANION_CAP)}): {', '.join(skipped)}")


def _write_config(src: str, dst: str, dtype: str, log: WriteLog) -> None:
    config = read_json_file(src)
    if isinstance(config, dict):
        _set_dtype(config, dtype)
        for sub in config.values():  # composite models (text_config, vision_config) carry their own
            if isinstance(sub, dict) and any(k in sub for k in _DTYPE_KEYS):
                _set_dtype(sub, dtype)
        log.note(f"config.json: dtype set to {dtype}")
    with open_output(dst) as out:
        out.write((json.dumps(config, indent=2) + "\n").encode("utf-8"))


def _set_dtype(config: dict[str, Any], dtype: str) -> None:
    keys = [k for k in _DTYPE_KEYS if k in config] or ["torch_dtype"]
    for k in keys:
        config[k] = dtype
