"""statecli: inspect and fix PyTorch checkpoints from the shell, without executing them.

The Python API (docs/api.md): `statecli.open`, `inspect`, `size`, `diff`, `scan`, `check`. They are
imported on first use, so `import statecli` (and `statecli --help`) stays as cheap as before."""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import check, diff, inspect, open, scan, size
    from .errors import ExitCode, StatecliError
    from .state import Checkpoint

__all__ = ["__version__", "open", "inspect", "size", "diff", "scan", "check", "Checkpoint", "StatecliError",
           "ExitCode"]

_LAZY = {"inspect": "api", "size": "api", "diff": "api", "scan": "api", "check": "api", "Checkpoint": "state",
         "StatecliError": "errors", "ExitCode": "errors"}


def __getattr__(name: str) -> Any:
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module 'statecli' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{home}", __name__), name)


class _Package(types.ModuleType):
    """`statecli.open` is the API function although a submodule (statecli/open.py) has that name too: the
    import system binds every submodule on its package as an attribute, which this property ignores
    (the submodule stays in sys.modules, where `from statecli.open import ...` finds it)."""

    @property
    def open(self) -> Any:
        from .api import open as api_open

        return api_open

    @open.setter
    def open(self, _submodule: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package
