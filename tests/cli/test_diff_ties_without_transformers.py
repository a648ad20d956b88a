"""diff of a save_pretrained folder (tied lm_head left out) against a torch.save of the same weights when
transformers is not installed: the config's tie_word_embeddings and the other file's shared storage say
the left-out key is the embedding, so the two compare equal with a note (they differed, exit 1)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

transformers = pytest.importorskip("transformers")
runner = CliRunner()


@pytest.fixture
def gpt2(tmp_path: Path) -> tuple[Path, Path]:
    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(tmp_path / "gpt2")
    torch.save(model.state_dict(), tmp_path / "gpt2.pt")  # lm_head.weight stored, on wte's storage
    return tmp_path / "gpt2", tmp_path / "gpt2.pt"


def _without_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "transformers" else real(name, *a))


def test_a_tie_the_config_declares_compares_equal_without_transformers(gpt2: tuple[Path, Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder, pt = gpt2
    _without_transformers(monkeypatch)
    res = runner.invoke(app, ["diff", str(folder), str(pt), "-f", "json"])
    assert res.exit_code == 0, res.output
    assert "tie_word_embeddings" in res.stderr and "lm_head.weight -> transformer.wte.weight" in res.stderr


def test_no_tie_when_the_config_unties(gpt2: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, pt = gpt2
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(cfg | {"tie_word_embeddings": False}))
    _without_transformers(monkeypatch)
    res = runner.invoke(app, ["diff", str(folder), str(pt), "-f", "json"])
    assert res.exit_code == 1 and "lm_head.weight" in res.stdout
