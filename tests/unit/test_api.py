"""The Python API (issue 26): each function's result is the command's `--format json` output, the
package's exports are lazy, and a notebook gets an HTML view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import statecli
from statecli.cli import app
from statecli.state import Verdict
from statecli.units import fmt_bytes

runner = CliRunner()


def _cli_json(*args: str) -> Any:
    res = runner.invoke(app, [*args, "--format", "json"])
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout)


def _plain(d: dict[str, Any]) -> Any:
    return json.loads(json.dumps(d, default=str))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str]:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"fc.weight": torch.ones(3, 2), "bn.running_mean": torch.zeros(3)}, str(a))
    save_file({"fc.weight": torch.ones(3, 2) * 2, "bn.running_mean": torch.zeros(3)}, str(b))
    return str(a), str(b)


def test_each_function_gives_the_commands_json(pair: tuple[str, str], cnn: Path) -> None:
    a, b = pair
    assert _plain(statecli.inspect(str(cnn)).to_dict()) == _cli_json("inspect", str(cnn))
    assert _plain(statecli.inspect(a, stats=True).to_dict()) == _cli_json("inspect", a, "--stats")
    assert _plain(statecli.size(str(cnn), depth=2).to_dict()) == _cli_json("size", str(cnn), "--depth", "2")
    assert _plain(statecli.diff(a, b).to_dict()) == _cli_json("diff", a, b)
    assert _plain(statecli.scan(a, str(cnn)).to_dict()) == _cli_json("scan", a, str(cnn))
    assert _plain(statecli.check(a, rules={"devices": "cpu", "no-nan": True}).to_dict()) == _cli_json(
        "check", a, "--devices", "cpu", "--no-nan")


def test_open_returns_the_checkpoint_and_keeps_its_name_beside_the_submodule(pair: tuple[str, str]) -> None:
    import importlib

    submodule = importlib.import_module("statecli.open")  # binds it on the package: the name must stay the API's

    ck = statecli.open(pair[0])
    assert [e.name for e in ck.entries] == ["bn.running_mean", "fc.weight"]
    assert statecli.open is statecli.api.open and submodule is sys.modules["statecli.open"]
    assert isinstance(ck, statecli.Checkpoint)


def test_errors_are_typed_with_the_commands_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(statecli.StatecliError) as err:
        statecli.open(str(bad))
    assert err.value.exit_code == statecli.ExitCode.BAD_INPUT


def test_every_exported_name_resolves() -> None:
    for name in statecli.__all__:
        assert getattr(statecli, name) is not None, name


def test_import_statecli_imports_no_heavy_module() -> None:
    """`import statecli` (what `statecli --help` pays first) loads none of the API's dependencies."""
    code = ("import sys, statecli; heavy = [m for m in ('typer', 'rich', 'numpy', 'torch', 'statecli.api', "
            "'statecli.analyses', 'statecli.load') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_results_show_as_html_in_a_notebook(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"<script>alert(1)</script>": torch.ones(2)}, str(path))
    page = statecli.inspect(str(path))._repr_html_()  # type: ignore[attr-defined]
    assert page.startswith("<!doctype html>") and "&lt;script&gt;" in page and "<script>" not in page
    table = statecli.scan(str(path))._repr_html_()  # type: ignore[attr-defined]
    assert table.startswith("<table>")


def test_the_command_line_starts_without_the_api_or_batch_modules() -> None:
    """`statecli --help` pays for neither: both are imported by the commands that use them."""
    code = ("import sys; from statecli.cli import app; print(','.join(m for m in sys.modules if m.startswith("
            "('statecli.api', 'statecli.batch.', 'statecli.io.traffic', 'distributed', 'email.utils'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_reprs_are_one_short_line_of_path_format_counts_and_bytes(pair: tuple[str, str], cnn: Path) -> None:
    """Review of issue 26: a small CNN's Checkpoint repr dumped every Entry/TensorInfo (~25 kB)."""
    ck = statecli.open(str(cnn))
    tensors = [e.tensor for e in ck.entries if e.tensor is not None]
    assert repr(ck) == (f"<Checkpoint {cnn} ({ck.format}): {len(ck.entries)} entries, {len(tensors)} tensors, "
                        f"{fmt_bytes(statecli.size(str(cnn)).to_dict()['nbytes'])}>")  # size's bytes: one rule
    a, b = pair
    results = [statecli.inspect(str(cnn)), statecli.size(str(cnn)), statecli.diff(a, b), statecli.scan(a, str(cnn)),
               statecli.check(a, rules={"no-nan": True})]
    for r in results:
        text = repr(r)
        assert text.startswith(f"<{type(r).__name__} ") and text.endswith(f"; exit code {int(r.exit_code)}>"), text
        assert len(text) < 200 and "\n" not in text and "TensorInfo" not in text and "Entry(" not in text, text
    assert str(cnn) in repr(results[0]) and str(cnn) in repr(results[1])


def test_a_scan_report_has_the_verdict_of_its_worst_counted_file(tmp_path: Path, pair: tuple[str, str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02cos\nsystem\n(X\x02\x00\x00\x00idtR.")
    assert statecli.scan(pair[0]).verdict is Verdict.SAFE
    report = statecli.scan(pair[0], str(bad))
    assert report.verdict is Verdict.DANGEROUS == max((f.verdict for f in report.files),
                                                                 key=lambda v: v.rank)
    assert statecli.scan().verdict is Verdict.SAFE  # nothing scanned: nothing unsafe
