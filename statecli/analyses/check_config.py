"""`check`'s rules and where it finds them: the Rules record, a TOML table or flags read into it (each value
checked), per-path overrides; a --config TOML file, else the nearest pyproject.toml with a
[tool.statecli.check] table (moved out of check.py, which kept growing rules)."""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import BadInput, UsageError
from ..formats.gguf.types import dtype_of
from ..qtensor import LOGICAL_DTYPES
from ..units import dtype_name, parse_size
from .quantized import bits_value
from .scan_folder import checkpoint_names

__all__ = ["Rules", "device_allowed", "load_config", "parse_size_value", "rules_for", "rules_from_mapping"]


@dataclass(frozen=True)
class Rules:
    safe_pickle: bool = True
    no_nan: bool = False
    no_inf: bool = False
    param_dtypes: tuple[str, ...] = ()
    buffer_dtypes: tuple[str, ...] = ()
    max_size: int | None = None
    devices: tuple[str, ...] = ()
    required_keys: tuple[str, ...] = ()
    forbidden_keys: tuple[str, ...] = ()
    no_optimizer_state: bool = False
    matches_model: str | None = None
    model_args: tuple[str, ...] = ()
    format: tuple[str, ...] = ()
    bits_per_weight_max: float | None = None
    quantization: tuple[str, ...] = ()  # quantization methods allowed; every weight but the ignore list quantized
    storage_dtypes: tuple[str, ...] = ()  # dtypes as stored (quantized parts); param_dtypes is the logical one


_KEYMAP = {f.name.replace("_", "-"): f.name for f in fields(Rules)}


def _as_tuple(v: Any, key: str, source: str) -> tuple[str, ...]:
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise UsageError(source, f"{key} must be a string or a list of strings")


def rules_from_mapping(base: Rules, table: dict[str, Any], source: str) -> Rules:
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("overrides",):
            continue
        attr = _KEYMAP.get(key)
        if attr is None:
            raise UsageError(source, f"unknown check setting {key!r}", f"known: {', '.join(sorted(_KEYMAP))}")
        current = getattr(base, attr)
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise UsageError(source, f"{key} must be true or false")
            changes[attr] = value
        elif attr == "max_size":
            changes[attr] = parse_size_value(value, source)
        elif attr == "bits_per_weight_max":
            changes[attr] = bits_value(value, key, source)
        elif attr == "matches_model":
            if not isinstance(value, str):
                raise UsageError(source, f"{key} must be a 'module:Name' string")
            changes[attr] = value
        elif attr in ("param_dtypes", "buffer_dtypes", "storage_dtypes"):
            changes[attr] = tuple(_dtype(d, key, source) for d in _as_tuple(value, key, source))
        elif attr == "devices":
            changes[attr] = tuple(_device(d, key, source) for d in _as_tuple(value, key, source))
        else:
            changes[attr] = _as_tuple(value, key, source)
    return replace(base, **changes)


def _dtype(text: str, key: str, source: str) -> str:
    """The same dtype words `cast --dtype` takes (half, fp16, bf16, torch.float16...), a quantized logical type
    or a GGML type."""
    name = dtype_name(text) or (text if text in LOGICAL_DTYPES else None) or dtype_of(text)  # int4, nf4, Q4_K...
    if name is None:
        raise UsageError(source, f"{key}: {text!r} is not a dtype", "e.g. float16 (half, fp16), bfloat16, float32")
    return name


_DEVICE = re.compile(r"cpu|meta|mps|(cuda|xpu|hpu|npu)(:\d+)?")


def _device(text: str, key: str, source: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise UsageError(source, f"{key}: {text!r} is not a torch device", "e.g. cpu, cuda, cuda:0, mps")
    return text


def device_allowed(device: str, allowed: tuple[str, ...]) -> bool:
    """'cuda' allows every cuda:N; 'cuda:0' only itself."""
    return device in allowed or device.split(":", 1)[0] in allowed


def parse_size_value(value: Any, source: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (n := parse_size(value)) is not None:
        return n
    raise UsageError(source, f"max-size {value!r} is not a number of bytes or a size like '2GB'")


def rules_for(path: str, base: Rules, table: dict[str, Any], source: str | None) -> Rules:
    rules = base
    names = [n.replace(os.sep, "/").rstrip("/") for n in checkpoint_names(path)]
    for ov in table.get("overrides", []) or []:
        globs = _as_tuple(ov.get("paths", []), "paths", source or "config")
        if any(fnmatch.fnmatch(n, g) or fnmatch.fnmatch(os.path.basename(n), g) for n in names for g in globs):
            rules = rules_from_mapping(rules, {k: v for k, v in ov.items() if k != "paths"}, source or "config")
    return rules


def load_config(config: str | None, start: str = ".") -> tuple[dict[str, Any], str | None]:
    """[tool.statecli.check] from --config (a TOML file: that table or a top-level [check]) or else the
    nearest pyproject.toml above `start` that has that table (a pyproject.toml without it, such as a
    sub-package's, does not hide the project's rules further up)."""
    if config is not None:
        data = _read_toml(config)
        table = data.get("tool", {}).get("statecli", {}).get("check")
        return (data.get("check", data) if table is None else table) or {}, config
    folder = os.path.abspath(start)
    while True:
        cand = os.path.join(folder, "pyproject.toml")
        if os.path.isfile(cand):
            table = _read_toml(cand).get("tool", {}).get("statecli", {}).get("check")
            if table is not None:
                return table or {}, cand
        parent = os.path.dirname(folder)
        if parent == folder:
            return {}, None
        folder = parent


def _read_toml(path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise BadInput(path, "config file not found") from exc
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise BadInput(path, f"unreadable TOML: {exc}") from exc
