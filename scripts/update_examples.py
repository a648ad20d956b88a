"""Re-run every `$ statecli ...` example in README.md and docs/*.md and paste its real output below it.

    python scripts/update_examples.py          # rewrite README.md and docs/*.md in place
    python scripts/update_examples.py --check  # exit 1 if any example's output is stale

Each example is a ```console block whose first line is `$ <command>`; the rest of the block is
replaced by the command's output (stdout, then stderr, as a 120-column terminal without colour shows
them) and a final `[exit N]` line when the exit code is not 0. Commands run from the repository root.

The examples run in this process through Typer's CliRunner (one interpreter, torch imported once:
seconds, not a subprocess per example), with `| head -N` / `| tail -N` applied to stdout as the shell
would. A separate end-to-end test runs the installed `statecli` script for real.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```console\n\$ (?P<cmd>[^\n]+)\n(?P<out>.*?)```", re.DOTALL)
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb", "GITHUB_ACTIONS": ""}


def _pipeline(cmd: str) -> tuple[list[str], list[Callable[[list[str]], list[str]]]]:
    """`statecli ARGS | head -N | tail -N` -> (ARGS, filters on stdout lines)."""
    stages = [shlex.split(part) for part in cmd.split(" | ")]
    if not stages[0] or stages[0][0] != "statecli":
        raise SystemExit(f"example does not start with statecli: {cmd}")
    filters: list[Callable[[list[str]], list[str]]] = []
    for stage in stages[1:]:
        if len(stage) != 2 or stage[0] not in ("head", "tail") or not re.fullmatch(r"-\d+", stage[1]):
            raise SystemExit(f"example uses a pipe this script does not emulate: {cmd}")
        n = int(stage[1][1:])
        filters.append((lambda lines, n=n: lines[:n]) if stage[0] == "head" else (lambda lines, n=n: lines[-n:]))
    return stages[0][1:], filters


def run(cmd: str) -> str:
    from typer.testing import CliRunner

    from statecli.cli import app

    args, filters = _pipeline(cmd)
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        result = CliRunner(env=ENV).invoke(app, args)
    finally:
        os.chdir(cwd)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    lines = result.stdout.splitlines()
    for f in filters:
        lines = f(lines)
    out = "\n".join(line.rstrip() for line in lines + result.stderr.splitlines())
    # A pipeline's status is its last command's: head/tail succeed whatever statecli returned.
    if result.exit_code and not filters:
        out += f"\n[exit {result.exit_code}]"
    return out + "\n"


def refreshed(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        cmd = m.group("cmd")
        return f"```console\n$ {cmd}\n{run(cmd)}```"

    return BLOCK.sub(replace, text)


def example_pages() -> list[Path]:
    """The pages whose examples are kept true: the README and every docs/ page that has one."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [p for p in pages if BLOCK.search(p.read_text())]


def main() -> int:
    stale = 0
    for page in example_pages():
        text = page.read_text()
        new = refreshed(text)
        if new == text:
            continue
        stale += 1
        if "--check" in sys.argv:
            import difflib

            name = str(page.relative_to(ROOT))
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), name,
                                                       f"{name} (now)"))
        else:
            page.write_text(new)
    return int(stale > 0 and "--check" in sys.argv)


if __name__ == "__main__":
    raise SystemExit(main())
