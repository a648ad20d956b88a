"""The README and docs/: every command has a README example, every `$ statecli ...` example shows what
the command prints today, and every relative link points at a file (and heading) that exists."""

from __future__ import annotations

import difflib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from statecli.cli import app
from tests.conftest import ROOT

LINKED_PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "SECURITY.md", ROOT / "CHANGELOG.md",
                *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); a target is cut at the first space (a title may follow).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def _update_examples() -> ModuleType:
    spec = importlib.util.spec_from_file_location("update_examples", ROOT / "scripts" / "update_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_has_help_and_a_readme_example() -> None:
    readme = (ROOT / "README.md").read_text()
    for cmd in app.registered_commands:
        name = cmd.name or cmd.callback.__name__  # type: ignore[union-attr]
        assert cmd.callback is not None and (cmd.callback.__doc__ or "").strip(), name
        assert f"statecli {name}" in readme, f"README has no example of `statecli {name}`"


def test_the_readme_and_the_command_reference_carry_examples() -> None:
    """The pages the next test keeps true: a page dropped from the list would go stale unnoticed."""
    pages = {p.relative_to(ROOT).as_posix() for p in _update_examples().example_pages()}
    assert {"README.md", "docs/commands.md"} <= pages, pages


@pytest.mark.parametrize("page", _update_examples().example_pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_examples_show_real_current_output(page: Path) -> None:
    """Every `$ statecli ...` block of the page is re-run; its pasted output must be what the command
    prints today (scripts/update_examples.py rewrites them). In-process: a few seconds."""
    text = page.read_text()
    new = _update_examples().refreshed(text)
    name = page.relative_to(ROOT).as_posix()
    stale = "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True), name, "now"))
    assert not stale, f"{name} examples are stale (run python scripts/update_examples.py):\n" + stale[:4000]


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = FENCE.sub("", page.read_text())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto: - not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.name}: " + "; ".join(broken)
