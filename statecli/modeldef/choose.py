"""Which model a checkpoint is classified against: --model, --hf-config, or a Hugging Face
config.json found beside the checkpoint (used when it is usable, named in a note when not)."""

from __future__ import annotations

import importlib.util
import json

from ..errors import UsageError
from ..extras import Extra, install_command
from .hf import build_hf_model
from .model import ModelInfo, build_model, find_hf_config, parse_model_args


def model_for(path: str, model: str | None, model_args: list[str] | None, model_kwargs: str | None,
              hf_config: str | None, auto_hf: bool) -> tuple[ModelInfo | None, list[str]]:
    """The model definition to classify `path` against, and notes to show: --model, --hf-config, or
    (with `auto_hf`) a usable Hugging Face config.json beside the checkpoint; an unusable one is
    named in a note and ignored, never an error."""
    if model:
        return build_model(model, parse_model_args(model_args or [], model_kwargs)), []
    if model_args or model_kwargs:
        raise UsageError(None, "--model-arg/--model-kwargs need --model")
    if hf_config:
        info = build_hf_model(hf_config)
        return info, [info.memo.note] if info.memo is not None else []
    cfg = find_hf_config(path) if auto_hf else None
    if cfg is None:
        return None, []
    try:
        with open(cfg, encoding="utf-8") as f:
            archs = json.load(f).get("architectures")
    except (OSError, ValueError, AttributeError):
        archs = None
    if not archs:
        return None, []  # some other config.json: not a Hugging Face model description
    if importlib.util.find_spec("transformers") is None:
        return None, [f"{cfg} describes a Hugging Face model; install transformers ({install_command(Extra.HF)}) "
                      "to classify entries exactly against it"]
    try:
        info = build_hf_model(cfg)
        return info, [info.memo.note] if info.memo is not None else []  # cached or built now (cache.py)
    except Exception as exc:  # noqa: BLE001 - an auto-detected config must never break inspect
        return None, [f"ignored {cfg} ({exc}); pass --hf-config to insist"]
