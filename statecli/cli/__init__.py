"""The command line: the Typer app (app.py), options declared once (options.py), and thin commands."""

from __future__ import annotations

from ..errors import ExitCode
from . import batch_commands, browse_command, commands, rewrite_commands, show_commands  # noqa: F401 - registers the commands on `app`
from .app import app, main

__all__ = ["app", "main", "ExitCode"]
