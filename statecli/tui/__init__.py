"""`statecli browse`: an interactive terminal browser (textual, the optional `tui` extra) over the
same inspect and diff results the other views render."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..extras import Extra, install_hint
from .model import Browse, Filter, Node, browse_data


def require_textual() -> None:
    """Fail with one line naming the extra when textual is missing (it is optional)."""
    try:
        import textual  # noqa: F401
    except ImportError:
        raise UsageError(None, "statecli browse needs the optional textual package", install_hint(Extra.TUI)) from None


def run(data: Browse, **kwargs: Any) -> None:
    """Run the browser in this terminal until the user quits."""
    require_textual()
    from .app import run as run_app

    run_app(data, **kwargs)


__all__ = ["Browse", "Filter", "Node", "browse_data", "require_textual", "run"]
