"""The closed sets of statecli are types: every option with a fixed set of values takes an enum (so
shell completion offers them), every exit code is an ExitCode, no code compares an exit code with a
bare number or string."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import typer
from typer.testing import CliRunner

import statecli
from statecli.cli import app
from statecli.state import KindFilter, OutputFormat
from statecli.vocab import CastOnly, CastTarget, SortOrder, WriteFormat

PACKAGE = Path(statecli.__file__).parent

# Every option whose values form a closed set, and the enum it takes. A new closed-set option is added
# here (the test below fails for any option it does not know that lists choices in its help).
CLOSED: dict[str, type[Enum]] = {"--format": OutputFormat, "--sort": SortOrder, "--kind": KindFilter,
                                 "--only": CastOnly, "--to": WriteFormat}


def _options() -> Iterator[tuple[str, Any]]:
    """(command, option) for every option of every command (Typer's own parameter objects)."""
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for p in command.params:
            if p.param_type_name == "option":
                yield name, p


def _choices(p: Any) -> list[str] | None:
    """The values an option takes when they form a closed set (its enum), else None."""
    ann = p.type_descriptor.annotation
    if get_origin(ann) is list:
        (ann,) = get_args(ann)
    return [e.value for e in ann] if isinstance(ann, type) and issubclass(ann, Enum) else None


def _is_flag(p: Any) -> bool:
    return p.type_descriptor.annotation is bool


def test_every_closed_set_option_takes_its_enum() -> None:
    seen = set()
    for command, p in _options():
        flag = max(p.opts, key=len)
        if flag in CLOSED:
            seen.add(flag)
            choices = _choices(p)
            assert choices is not None, f"{command} {flag} is a plain string: it should take {CLOSED[flag].__name__}"
            assert set(choices) <= {e.value for e in CLOSED[flag]}, (command, flag, choices)
    assert seen == set(CLOSED)  # each is declared on at least one command


def test_no_other_option_is_a_hidden_choice() -> None:
    """An option whose help spells out a list ('one of: a, b', 'a or b') without being a Choice is
    a closed set typed as a string; --dtype is the one exception: it takes aliases too (see below)."""
    for command, p in _options():
        if _choices(p) is not None or _is_flag(p) or max(p.opts, key=len) == "--dtype":
            continue
        help_text = (p.help or "").lower()
        assert "choose from" not in help_text and "one of:" not in help_text, (command, p.opts)


def test_dtype_completes_to_the_cast_targets() -> None:
    group = typer.main.get_command(app)
    cast = group.commands["cast"]  # type: ignore[attr-defined]
    dtype = next(p for p in cast.params if "--dtype" in getattr(p, "opts", ()))
    ctx = typer.Context(cast, info_name="cast")
    offered = [c.value for c in dtype.shell_complete(ctx, "")]
    assert offered == [t.value for t in CastTarget]
    assert [c.value for c in dtype.shell_complete(ctx, "bf")] == ["bfloat16"]


@pytest.mark.parametrize("args", [["diff", "a.pt", "b.pt", "--sort", "size"], ["inspect", "a.pt", "--kind", "weights"],
                                  ["cast", "a.pt", "--dtype", "half", "--only", "weights", "-o", "x.pt"],
                                  ["convert", "a.pt", "--to", "onnx", "-o", "x"]])
def test_a_value_outside_the_set_is_a_usage_error(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


@functools.cache
def _modules() -> tuple[tuple[Path, ast.Module], ...]:
    """The package parsed once for the four tests that walk it (read only)."""
    return tuple((path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
                 for path in sorted(PACKAGE.rglob("*.py")))


def _is_exit_code(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "exit_code"
            or isinstance(node, ast.Name) and node.id == "exit_code")


def _literal(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, str)) and not isinstance(node.value, bool)


def test_no_exit_code_is_compared_with_a_literal() -> None:
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_is_exit_code(s) for s in sides) and any(_literal(s) for s in sides):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found


def test_every_exit_names_its_exit_code() -> None:
    """typer.Exit / sys.exit take an ExitCode member (or a result's exit code), never a bare number."""
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("Exit", "exit"):
                if not node.args or _literal(node.args[0]):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found


def _string_literals(node: ast.expr) -> bool:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_string_literals(x) for x in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def test_no_format_or_layout_is_compared_with_a_string() -> None:
    """A format, layout or quantization method is compared with its enum member or named constant."""
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                named = any(isinstance(x, ast.Attribute) and x.attr in ("format", "layout", "method") for x in sides)
                if named and any(_string_literals(x) for x in sides):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found


def _exit_code_bodies(tree: ast.Module) -> Iterator[ast.AST]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "exit_code":
            yield node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_is_exit_code(t) for t in targets) and node.value is not None:
                yield node.value


def test_every_exit_code_is_an_exit_code() -> None:
    """No result says 0/1/2/3: each names ExitCode's member, so max() ranks them by the enum."""
    found = []
    for path, tree in _modules():
        for body in _exit_code_bodies(tree):
            for node in ast.walk(body):
                if isinstance(node, ast.Constant) and type(node.value) is int:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found


def test_results_return_exit_codes(tmp_path: Path) -> None:
    from statecli.analyses.check import CheckResult
    from statecli.analyses.scan import ScanReport
    from statecli.errors import ExitCode

    results: list[Any] = [CheckResult(), CheckResult(errors=(("x", "bad"),)), CheckResult(unsafe=(("x", "bad"),)),
                          ScanReport()]
    assert [type(r.exit_code) for r in results] == [ExitCode] * 4
    assert [r.exit_code for r in results] == [ExitCode.OK, ExitCode.BAD_INPUT, ExitCode.UNSAFE, ExitCode.OK]
