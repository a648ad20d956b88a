"""The README: every command has an example, and every example shows what the command prints today."""

from __future__ import annotations

from typer.testing import CliRunner

from statecli.cli import app
from tests.conftest import ROOT

runner = CliRunner()




def test_every_command_has_help_and_a_readme_example() -> None:
    readme = (ROOT / "README.md").read_text()
    for cmd in app.registered_commands:
        name = cmd.name or cmd.callback.__name__  # type: ignore[union-attr]
        assert cmd.callback is not None and (cmd.callback.__doc__ or "").strip(), name
        assert f"statecli {name}" in readme, f"README has no example of `statecli {name}`"


def test_readme_examples_show_real_current_output() -> None:
    """Every `$ statecli ...` block in the README is re-run; its pasted output must be what the
    command prints today (scripts/update_readme.py rewrites them). In-process: a few seconds."""
    import difflib
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "scripts" / "update_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "README.md").read_text()
    new = module.refreshed(text)
    stale = "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True), "README.md", "now"))
    assert not stale, "README examples are stale (run python scripts/update_readme.py):\n" + stale[:4000]
