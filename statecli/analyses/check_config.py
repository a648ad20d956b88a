"""Where `check` finds its rules: a --config TOML file, else the nearest pyproject.toml with a
[tool.statecli.check] table (moved out of check.py, which kept growing rules)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import BadInput

__all__ = ["load_config"]


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
