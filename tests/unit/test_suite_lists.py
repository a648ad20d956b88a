"""The suite's own lists name tests and files that exist: a renamed test would otherwise leave SLOW silently
(and slow the quick loop down), and a renamed ONE_WORKER file would build its costly fixture on every worker."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ONE_WORKER, SLOW

TESTS = Path(__file__).resolve().parents[1]


def _tests_in(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")}


def test_every_slow_entry_names_a_test_that_exists() -> None:
    missing = []
    for entry in sorted(SLOW):
        rel, _, name = entry.partition("::")
        path = TESTS / rel
        if not path.is_file() or (name and name not in _tests_in(path)):
            missing.append(entry)
    assert not missing, f"SLOW names tests that do not exist: {missing}"


def test_every_one_worker_unit_exists() -> None:
    assert not [unit for unit in sorted(ONE_WORKER) if not (TESTS / unit).exists()]
