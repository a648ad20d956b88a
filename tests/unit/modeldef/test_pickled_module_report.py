"""The load report of a torch.save(model) file against a model definition counts what torch's own
load_state_dict(strict=True) rejects, nothing else: a pickled module's non-persistent buffers and plain
tensor attributes are not in its state_dict(), so they are named in a note, never as problems; and the
printed problem count equals the rows of the problem table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from statecli.analyses.inspect import inspect
from statecli.cli import app
from statecli.load import load_checkpoint
from statecli.modeldef.model import build_model

torch = pytest.importorskip("torch")

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, head: int = 2, extra: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4)
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, head)
        self.register_buffer("window", torch.ones(4), persistent=False)
        self.temperature = torch.tensor(0.5)  # a plain tensor attribute: neither parameter nor buffer
        if extra:
            self.register_buffer("scale", torch.ones(1))
'''


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Path, Any]:
    """net.py, a torch.save(Net()) file made from it, and the module (to build torch's reference)."""
    src = tmp_path / "net.py"
    src.write_text(NET)
    spec = importlib.util.spec_from_file_location("statecli_test_net", src)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["statecli_test_net"] = module
    spec.loader.exec_module(module)
    path = tmp_path / "full.pt"
    torch.save(module.Net(), path)
    yield src, path, module
    del sys.modules["statecli_test_net"]


def torch_rejects(path: Path, module: Any, kwargs: dict[str, Any]) -> set[str]:
    """What load_state_dict(strict=True) names: torch's own missing and unexpected keys and size mismatches."""
    loaded = torch.load(path, weights_only=False)  # the test's own file, made above
    model = module.Net(**kwargs)
    try:
        model.load_state_dict(loaded.state_dict(), strict=True)
    except RuntimeError as exc:
        result = model.load_state_dict(loaded.state_dict(), strict=False) if "size mismatch" not in str(exc) else None
        if result is None:  # size mismatches raise even with strict=False: the shapes name them
            sd = loaded.state_dict()
            return {k for k, v in model.state_dict().items() if k in sd and sd[k].shape != v.shape}
        return set(result.missing_keys) | set(result.unexpected_keys)
    return set()


@pytest.mark.parametrize("kwargs", [{}, {"extra": True}, {"head": 3}])
def test_problems_are_what_torch_rejects(saved: tuple[Path, Path, Any], kwargs: dict[str, Any]) -> None:
    src, path, module = saved
    result = inspect(load_checkpoint(str(path)), model=build_model(f"{src}:Net", kwargs))
    problems = {x.key for x in result.load_report if x.blocking}
    assert problems == torch_rejects(path, module, kwargs)
    assert all(x.blocking == x.fails_strict for x in result.load_report)
    assert "temperature" not in {x.key for x in result.load_report}
    notes = " ".join(n.text for n in result.checkpoint.messages)
    assert "temperature (tensor attribute)" in notes and "window (buffer (non-persistent))" in notes


def test_a_pickled_attribute_keeps_its_pickled_kind_beside_the_model(saved: tuple[Path, Path, Any]) -> None:
    src, path, _ = saved
    result = inspect(load_checkpoint(str(path)), model=build_model(f"{src}:Net", {}))
    kinds = {e.name: (str(e.kind), str(e.evidence)) for e in result.entries}
    assert kinds["temperature"] == ("tensor attribute", "pickled module")
    assert kinds["proj.weight"] == ("parameter", "model definition")


@pytest.mark.parametrize(("args", "count"), [([], 0), (["--model-arg", "extra=True"], 1)])
def test_printed_count_equals_the_problem_rows(saved: tuple[Path, Path, Any], args: list[str], count: int) -> None:
    src, path, _ = saved
    out = CliRunner().invoke(app, ["inspect", str(path), "--model", f"{src}:Net", *args],
                             env={"NO_COLOR": "1", "COLUMNS": "200"}).stdout
    lines = out.splitlines()
    head = next(i for i, x in enumerate(lines) if x.startswith("load report against"))
    if count == 0:
        assert lines[head].endswith("loads with strict=True") and head == len(lines) - 1
        return
    assert lines[head].endswith(f"would fail ({count} problem{'s' if count > 1 else ''})")  # "1 problem"
    rows = [x for x in lines[head + 2:] if x and not x.startswith("accepted by")]
    assert len(rows) == count and rows[0].startswith("scale ")
