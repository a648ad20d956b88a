"""statecli's stderr carries only its own lines: commands that build through transformers (a GGUF diffed
against its safetensors, `size` of a quantized model folder) import torch, transformers and, with torchao
installed (.ci/quant-test.txt), torchao, whose "Failed to load ..._C_mxfp8.so" and torch's `W1206 ...
register_constant()` lines went to stderr. Run as the installed command (a subprocess: the entry point
is where they are held back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gguf_archs import tiny, to_gguf

pytest.importorskip("gguf")
pytest.importorskip("transformers")
pytest.importorskip("torch")
OWN = ("note:", "statecli:", "warning:")  # the prefixes of statecli's own stderr lines


def _stderr(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "STATECLI_NO_CACHE": "1", "COLUMNS": "400"}
    env.pop("TORCH_CPP_LOG_LEVEL", None)
    r = subprocess.run([sys.executable, "-m", "statecli", *args], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    assert r.returncode in (0, 1), r.stderr
    return r.stderr


def _foreign(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(OWN)]


def test_gguf_diff_and_bnb_folder_size_print_no_library_lines(tmp_path: Path) -> None:
    model = tiny(tmp_path, "qwen2_moe")
    g = to_gguf(model, tmp_path / "m.gguf", "Q8_0")
    err = _stderr(tmp_path, "diff", str(g), str(tmp_path / "model.safetensors"))
    assert "note: 55 of 55 names" in err and not _foreign(err), err
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    err = _stderr(tmp_path, "size", str(tmp_path))
    assert "classified against" in err and not _foreign(err), err
