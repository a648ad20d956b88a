"""Shared fixtures: paths and helpers for building checkpoints in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_checkpoints"


@pytest.fixture
def samples() -> Path:
    """The committed demo checkpoints. Missing ones fail: a skipped sample test hides a broken clone."""
    missing = [n for n in ("cnn.pt", "cnn.safetensors", "full_model.pt", "train_ckpt.pt", "transformer.pt")
               if not (SAMPLES / n).is_file()]
    assert not missing, f"sample_checkpoints/ lacks {missing}: run python sample_checkpoints/make_samples.py"
    return SAMPLES


def small_cnn() -> Any:
    """A conv + BatchNorm + linear module: parameters, buffers and num_batches_tracked in 7 keys."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.bn = torch.nn.BatchNorm2d(4)
            self.head = torch.nn.Linear(4, 2)

    return Net()


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    """small_cnn()'s state dict saved with torch.save (seeded)."""
    import torch

    torch.manual_seed(0)
    path = tmp_path / "cnn.pt"
    torch.save(small_cnn().state_dict(), path)
    return path


def flatten_torch(obj: object, prefix: str = "") -> dict[str, object]:
    """Independent reference flattening of a torch.load result: dotted names -> tensors."""
    import torch

    out: dict[str, object] = {}

    def has_tensor(x: object) -> bool:
        if isinstance(x, torch.Tensor):
            return True
        if isinstance(x, dict):
            return any(has_tensor(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return any(has_tensor(v) for v in x)
        return False

    def walk(x: object, name: str) -> None:
        if isinstance(x, torch.Tensor):
            out[name] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(x, (list, tuple)) and has_tensor(x):
            for i, v in enumerate(x):
                walk(v, f"{name}.{i}" if name else str(i))

    walk(obj, prefix)
    return out


@pytest.fixture(autouse=True)
def _no_inherited_terminal_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables fit COLUMNS when it is set; a test must not depend on the caller's terminal (pytest-xdist
    workers inherit COLUMNS=80). Tests that want a width pass it explicitly."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Model descriptions cached by the tests go to a temp folder, never the user's ~/.cache."""
    import os

    os.environ.setdefault("STATECLI_CACHE_DIR", str(tmp_path_factory.mktemp("statecli-cache")))


# The folders whose every test carries the marker of the same name (registered in pyproject.toml).
FOLDER_MARKERS = ("e2e", "security", "remote")

# Tests that take seconds each on a 2-core machine (measured with `pytest --durations`): `-m "not slow"`
# leaves them out of the quick loop. A file path marks every test in it; `path::name` one test (and all
# its parameters).
SLOW: frozenset[str] = frozenset()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        rel = item.path.relative_to(tests).as_posix()
        if rel.split("/")[0] in FOLDER_MARKERS:
            item.add_marker(rel.split("/")[0])
        name = item.nodeid.split("::", 1)[-1].split("[")[0]
        if rel in SLOW or f"{rel}::{name}" in SLOW:
            item.add_marker("slow")
