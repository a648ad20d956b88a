"""check's safe-pickle rule on a file without any pickle says there is none (safetensors, GGUF, ONNX, a .pt2
whose archive holds no pickle), never "only weights-only allowlisted globals", which a torch.save keeps."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.cli import app

ALLOWLISTED = "only weights-only allowlisted globals"


def _reason(path: Path) -> str:
    r = CliRunner().invoke(app, ["check", str(path), "-f", "json"])
    assert r.exit_code == 0, r.output
    [finding] = [f for f in json.loads(r.output)["findings"] if f["rule"] == "safe-pickle"]
    assert finding["passed"] is True
    return str(finding["reason"])


def test_torch_save_names_its_allowlisted_globals(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert _reason(tmp_path / "m.pt") == ALLOWLISTED


def test_safetensors_has_no_pickle(tmp_path: Path) -> None:
    save_file({"w": torch.ones(2)}, tmp_path / "m.safetensors")
    assert _reason(tmp_path / "m.safetensors") == "no pickle in this safetensors file"


def test_gguf_has_no_pickle(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from tests.gguf_files import write_gguf

    path = write_gguf(tmp_path / "m.gguf", {"blk.0.attn_q.weight": (np.ones((2, 32), np.float32), "Q8_0")})
    assert _reason(path) == "no pickle in this gguf file"


def test_onnx_has_no_pickle(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from tests.unit.formats.test_onnx import _export

    _export(tmp_path / "m.onnx")
    assert _reason(tmp_path / "m.onnx") == "no pickle in this onnx file"


def test_pt2_without_its_pickled_sample_inputs_has_no_pickle(tmp_path: Path) -> None:
    from tests.unit.formats.test_pt2 import _export

    _export(tmp_path / "m.pt2")
    assert _reason(tmp_path / "m.pt2") == ALLOWLISTED  # torch.export.save pickles its sample inputs
    with zipfile.ZipFile(tmp_path / "m.pt2") as z:
        members = {i.filename: z.read(i) for i in z.infolist() if not i.filename.endswith("sample_inputs/model.pt")}
    with zipfile.ZipFile(tmp_path / "bare.pt2", "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    assert _reason(tmp_path / "bare.pt2") == "no pickle in this torch.export pt2 file"
