"""A Hugging Face config.json's custom code: the `auto_map` entries that make transformers import
Python from the model folder (`configuration_*.py`, `modeling_*.py`) when asked to trust it. statecli
never asks (trust_remote_code=False everywhere); this is the one place that says which code a config
names, for scan's verdict and for the notes of the commands that classify against the config."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import BadInput
from ._common import open_regular

__all__ = ["CONFIG_CAP", "ConfigCode", "config_code"]

# A config.json is a few KiB; anything far larger is not one and is not read whole.
CONFIG_CAP = 16 << 20


@dataclass(frozen=True)
class ConfigCode:
    """The code a config.json's auto_map names. `files`: the .py files in the folder those modules
    resolve to; `absent`: modules named but not in the folder (another repository's, `org/repo--mod`,
    or missing); `model_type`: the config's standard model type, if it names one."""

    config: str
    files: tuple[str, ...]
    absent: tuple[str, ...]
    model_type: str | None

    def describe(self) -> str:
        """"config.json names custom code (auto_map): configuration_x.py, modeling_x.py"."""
        named = list(self.files) + [f"{m} (not in the folder)" for m in self.absent]
        return f"{self.config} names custom code (auto_map): {', '.join(named) or 'no module'}"

    def note(self) -> str:
        """The note of a command that read this config: the code is named, and was not run."""
        return f"{self.describe()}; statecli never runs it (trust_remote_code=False)"


def config_code(config_path: str) -> ConfigCode | None:
    """The custom code `config_path` names in auto_map, or None when it names none. BadInput when
    the file cannot be read as a JSON object."""
    try:
        with open_regular(config_path) as f:
            text = f.read(CONFIG_CAP + 1)
    except OSError as exc:
        raise BadInput(config_path, f"unreadable config.json: {exc}") from exc
    if len(text) > CONFIG_CAP:
        raise BadInput(config_path, f"config.json is over {CONFIG_CAP} bytes; not a model config")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadInput(config_path, f"unreadable config.json: {exc}") from exc
    if not isinstance(raw, dict) or "auto_map" not in raw:
        return None
    folder = os.path.dirname(os.path.abspath(config_path))
    files: dict[str, None] = {}
    absent: dict[str, None] = {}
    for ref in _references(raw["auto_map"]):
        repo, _, dotted = ref.rpartition("--")  # "org/repo--modeling_x.X": code from another repository
        module = dotted.rpartition(".")[0] or dotted
        rel = module.replace(".", "/") + ".py"
        if not repo and _inside(folder, rel) and os.path.isfile(os.path.join(folder, rel)):
            files[rel] = None
        else:
            absent[f"{repo}--{module}" if repo else module] = None
    if not files and not absent:
        return None  # an empty auto_map: transformers finds no class to import
    model_type = raw.get("model_type")
    return ConfigCode(config_path, tuple(files), tuple(absent),
                      model_type if isinstance(model_type, str) and model_type else None)


def _references(auto_map: object) -> list[str]:
    """Every class reference in an auto_map (values are strings, or lists such as a tokenizer's
    [slow, fast] pair with None for a missing one); anything else there still names code."""
    if isinstance(auto_map, dict):
        return [ref for v in auto_map.values() for ref in _references(v)]
    if isinstance(auto_map, list):
        return [ref for v in auto_map for ref in _references(v)]
    if isinstance(auto_map, str):
        return [auto_map]
    return [] if auto_map is None else [repr(auto_map)]


def _inside(folder: str, rel: str) -> bool:
    """`rel` names a file below `folder` (a module name cannot, but a crafted one may try `..`)."""
    full = os.path.normpath(os.path.join(folder, rel))
    return full.startswith(os.path.normpath(folder) + os.sep)
