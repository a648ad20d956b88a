"""Chat template checks: every escape route of the hostile corpus is a finding naming its key (scan and
inspect exit 3), no real template of a common family is (false positives), a template jinja2 cannot
parse is not passed as checked, and without jinja2 a GGUF with a template fails closed (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli import app
from statecli.formats.gguf.template import check
from tests.gguf_files import write_gguf
from tests.unit.gguf.templates import HOSTILE, REAL

pytest.importorskip("jinja2")
pytest.importorskip("gguf")


def _model(tmp_path: Path, templates: dict[str, str], name: str = "m.gguf") -> Path:
    w = np.ones((2, 32), np.float32)
    return write_gguf(tmp_path / name, {"blk.0.ffn_up.weight": (w, "Q8_0")}, templates)


@pytest.mark.parametrize("family", sorted(REAL))
def test_real_templates_have_no_findings(family: str) -> None:
    found, errors = check("tokenizer.chat_template", REAL[family])
    assert (found, errors) == ([], [])


# Item access real templates use: indexes computed from numbers, keys from the data.
BENIGN = ["{{ messages[i + 1]['content'] }}", "{{ messages[loop.index0 - 1].role }}",
          "{% set k = 'role' %}{{ message[k] }}", "{{ message['content'][:-1] }}", "{{ x|map(attribute='name')|list }}"]


@pytest.mark.parametrize("source", BENIGN)
def test_item_access_of_real_templates_is_no_finding(source: str) -> None:
    assert check("tokenizer.chat_template", source) == ([], [])


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_every_escape_route_is_found(case: str) -> None:
    found, errors = check("tokenizer.chat_template.tool_use", HOSTILE[case])
    assert errors == [] and found, case
    assert all(f.startswith("tokenizer.chat_template.tool_use: ") for f in found)


@pytest.mark.parametrize("case", ["globals", "include", "computed-key"])
def test_scan_and_inspect_refuse_a_hostile_template(tmp_path: Path, case: str) -> None:
    path = _model(tmp_path, {"tokenizer.chat_template": REAL["chatml"],
                             "tokenizer.chat_template.rag": HOSTILE[case]})
    scan = CliRunner().invoke(app, ["scan", str(path)])
    assert scan.exit_code == 3, scan.output
    assert "tokenizer.chat_template.rag" in scan.output and "Traceback" not in scan.output
    for command in ("inspect", "check"):
        result = CliRunner().invoke(app, [command, str(path)])
        assert result.exit_code == 3, (command, result.output)
        assert "tokenizer.chat_template.rag" in result.output


def test_real_templates_scan_clean(tmp_path: Path) -> None:
    path = _model(tmp_path, {"tokenizer.chat_template": REAL["llama-3.1"], "tokenizer.chat_template.tool_use":
                             REAL["qwen-tools"]})
    result = CliRunner().invoke(app, ["scan", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output


def test_unparseable_template_is_not_passed(tmp_path: Path) -> None:
    path = _model(tmp_path, {"tokenizer.chat_template": "{% for m in messages %}{{ m }"})
    result = CliRunner().invoke(app, ["scan", str(path)])
    assert result.exit_code == 2, result.output
    assert "tokenizer.chat_template" in result.output


def test_oversized_and_deep_templates_are_bounded() -> None:
    found, _ = check("tokenizer.chat_template", "x" * (2 << 20))
    assert found
    deep = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    found, errors = check("tokenizer.chat_template", deep)
    assert found or errors  # never a RecursionError out of the check


@pytest.mark.parametrize("command", ["scan", "check"])
def test_without_jinja2_a_template_fails_closed(tmp_path: Path, command: str) -> None:
    path = _model(tmp_path, {"tokenizer.chat_template": REAL["chatml"]})
    code = ("import sys\nsys.modules['jinja2'] = None\n"
            f"sys.argv = ['statecli', {command!r}, {str(path)!r}]\nfrom statecli.cli import main\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "gguf" in (done.stdout + done.stderr) and "Traceback" not in done.stderr


def test_scan_json_names_the_key(tmp_path: Path) -> None:
    path = _model(tmp_path, {"tokenizer.chat_template": HOSTILE["subclasses"]})
    result = CliRunner().invoke(app, ["scan", str(path), "--format", "json"])
    assert result.exit_code == 3
    assert "tokenizer.chat_template" in json.dumps(json.loads(result.output))


def test_folder_scan_reads_a_gguf_beside_the_config(tmp_path: Path) -> None:
    _model(tmp_path, {"tokenizer.chat_template": HOSTILE["include"]}, "model-q4.gguf")
    (tmp_path / "config.json").write_text("{}")
    result = CliRunner().invoke(app, ["scan", str(tmp_path)])
    assert result.exit_code == 3 and "model-q4.gguf" in result.output, result.output


def test_inspect_without_jinja2_warns_that_the_template_was_not_checked(tmp_path: Path) -> None:
    path = _model(tmp_path, {"tokenizer.chat_template": REAL["chatml"]})
    code = ("import sys\nsys.modules['jinja2'] = None\n"
            f"sys.argv = ['statecli', 'inspect', {str(path)!r}]\nfrom statecli.cli import main\nmain()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "not checked" in done.stderr and "gguf" in done.stderr
