"""Which model a checkpoint is classified against: --model, --hf-config, or a Hugging Face
config.json found beside the checkpoint (used when it is usable, named in a note when not)."""

from __future__ import annotations

import importlib.util

from ..errors import BadInput, UsageError
from ..extras import Extra, install_command
from ..formats.hfconfig import ConfigCode, config_code
from ..io.limits import read_json_file
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
        return info, _notes(_code(hf_config), [info.memo.note] if info.memo is not None else [])
    cfg = find_hf_config(path) if auto_hf else None
    if cfg is None:
        return None, []
    code = _code(cfg)
    try:
        archs = read_json_file(cfg).get("architectures")
    except (OSError, ValueError, AttributeError):
        archs = None
    if not archs:
        return None, _notes(code, [])  # some other config.json: not a Hugging Face model description
    if importlib.util.find_spec("transformers") is None:
        return None, _notes(code, [f"{cfg} describes a Hugging Face model; install transformers "
                                   f"({install_command(Extra.HF)}) to classify entries exactly against it"])
    try:
        info = build_hf_model(cfg)
        return info, _notes(code, [info.memo.note] if info.memo is not None else [])  # cached or built now
    except Exception as exc:  # noqa: BLE001 - an auto-detected config must never break inspect
        if code is not None:
            return None, _notes(code, ["classified by inference instead (no standard class to build)"])
        return None, [f"ignored {cfg} ({exc}); pass --hf-config to insist"]


def _code(cfg: str) -> ConfigCode | None:
    try:
        return config_code(cfg)
    except BadInput:
        return None  # an unreadable config is named by the paths that read it


def _notes(code: ConfigCode | None, notes: list[str]) -> list[str]:
    """One note: the custom code the config names (never run) and how classification went on."""
    if code is None:
        return notes
    return ["; ".join([code.note(), *notes])]
