"""check on a GGUF: --param-dtypes takes GGML type names (Q4_K matches the quantized type, F32 the
float32 a plain tensor reads as), key rules see metadata keys (a required general.license), and --max-size
is the file on disk (a hostile template's check: test_gguf_templates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_files import write_gguf

pytest.importorskip("gguf")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    return write_gguf(tmp_path / "m.gguf", {
        "blk.0.attn_q.weight": (rng.standard_normal((4, 256)).astype(np.float32), "Q4_K"),
        "blk.0.ffn_down.weight": (rng.standard_normal((4, 256)).astype(np.float32), "Q6_K"),
        "blk.0.attn_norm.weight": (rng.standard_normal(256).astype(np.float32), "F32")},
        {"general.license": "apache-2.0"})


def _check(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["check", *args], env={"COLUMNS": "250"})
    return r.exit_code, r.output


def test_param_dtypes_match_ggml_types(model: Path) -> None:
    assert _check(str(model), "--param-dtypes", "Q4_K,Q6_K,F32")[0] == 0
    code, out = _check(str(model), "--param-dtypes", "Q4_K,F32")
    assert code == 1 and "blk.0.ffn_down.weight" in out and "Q6_K" in out


def test_metadata_keys_are_keys_for_the_key_rules(model: Path) -> None:
    assert _check(str(model), "--required-key", "^general\\.license$")[0] == 0
    code, out = _check(str(model), "--forbidden-key", "^general\\.license$")
    assert code == 1 and "general.license" in out
    assert _check(str(model), "--required-key", "^general\\.url$")[0] == 1


def test_max_size_is_the_file_on_disk(model: Path) -> None:
    on_disk = model.stat().st_size
    assert _check(str(model), "--max-size", str(on_disk))[0] == 0
    assert _check(str(model), "--max-size", str(on_disk - 1))[0] == 1
