"""cli/fastparams.py: every statecli option converts to exactly what Typer's pydantic conversion gives
(values, types, error messages), and a command runs without importing pydantic."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer import _coercion

from statecli.cli import app, fastparams

SAMPLES: list[Any] = ["5", "007", "+5", "-3", " 5", "5 ", "1_000", "5.0", "1e3", "0", "-0", "x", "", "1e-5", "1E+2",
                      "inf", "-inf", "nan", ".5", "5.", "1e999", "99999999999999999999", "0x10", "json", "JSON", "table",
                      "html", "md", "csv", "true", "yes", "1", True, False, 3, 2.5, 0, b"bytes", ["1", "2"], ("a", "x"),
                      ("json",), (), []]


def _params() -> list[tuple[Any, Any, Any]]:
    """(click context, parameter, descriptor) for every option and argument of every command."""
    group = typer.main.get_command(app)
    out = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        ctx = typer.Context(command, info_name=name)
        for p in command.params:
            if hasattr(p, "type_descriptor"):
                out.append((ctx, p, p.type_descriptor))
    return out


def _outcome(runtime: Any, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
    try:
        result = runtime._coerce_value(value, param=param, ctx=ctx)
    except Exception as exc:  # noqa: BLE001 - the comparison covers errors too
        return "error", (type(exc).__name__, str(exc))
    if isinstance(result, float) and math.isnan(result):
        return "nan", type(result)
    return "value", (result, type(result), [type(x) for x in result] if isinstance(result, list) else None)


def test_installed_on_this_typer() -> None:
    assert fastparams.INSTALLED == typer.__version__.startswith(fastparams.CHECKED)


@pytest.mark.skipif(not fastparams.INSTALLED, reason="Typer version not covered by the fast path")
def test_every_option_converts_like_typer() -> None:
    params = _params()
    assert sum(fastparams.eligible(d) for _, _, d in params) >= 20  # the fast path covers statecli's options
    for ctx, param, desc in params:
        if not fastparams.eligible(desc):
            continue
        slow = _coercion.build_runtime_param(desc)  # Typer's own (pydantic) converter
        fast = typer.core.build_runtime_param(desc)
        assert type(fast).__name__ == "FastRuntimeParam"
        for value in SAMPLES:
            assert _outcome(fast, value, param, ctx) == _outcome(slow, value, param, ctx), (param.name, value)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = ("import sys, atexit\natexit.register(lambda: sys.stderr.write('PYDANTIC=%s\\n' % ('pydantic' in "
            "sys.modules)))\nfrom statecli.cli import main\nsys.argv = ['statecli', *sys.argv[1:]]\nmain()\n")
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120,
                          check=False)


@pytest.mark.skipif(not fastparams.INSTALLED, reason="Typer version not covered by the fast path")
def test_command_runs_without_pydantic(tmp_path: Path) -> None:
    f = tmp_path / "a.safetensors"
    header = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    f.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    out = _cli("size", str(f), "--depth", "2", "--top", "3", "-f", "json", "--strip-prefix", "x.")
    assert out.returncode == 0 and "PYDANTIC=False" in out.stderr, out.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--depth", "0"], "Invalid value for '--depth': Input should be greater than or equal to 1"),
    (["--depth", "x"], "Invalid value for '--depth': Input should be a valid integer, unable to parse string as an "
                       "integer"),
    (["-f", "xml"], "Invalid value for '--format' / '-f': Value error, 'xml' is not one of"),
])
def test_bad_values_keep_typers_message_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    f = tmp_path / "a.safetensors"
    header = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    f.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    out = _cli("size", str(f), *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
