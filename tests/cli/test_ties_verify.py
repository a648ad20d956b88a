"""Convert, then verify: a checkpoint with tied weights diffs equal to its own conversions (safetensors
written by statecli or by safetensors.save_model, save_pretrained folders, DCP), and a round trip back
to .pt loads strictly. torch, safetensors and transformers write the copies; torch loads the results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


class Tied(torch.nn.Module):
    """An embedding and an output head sharing one Parameter, as language models tie them."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(12, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.head = torch.nn.Linear(6, 12, bias=False)
        self.head.weight = self.embed.weight


def _tied(seed: int = 0) -> Tied:
    torch.manual_seed(seed)
    return Tied()


def _run(args: list[str]) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "-f", "json"])
    assert result.exit_code in (0, 1), (result.stdout, result.stderr)
    return result.exit_code, json.loads(result.stdout)


def _convert(src: Path, out: Path, *extra: str) -> None:
    result = runner.invoke(app, ["convert", str(src), "-o", str(out), *extra])
    assert result.exit_code == 0, (result.stdout, result.stderr)


def test_statecli_conversion_diffs_equal_with_the_alias_noted(tmp_path: Path) -> None:
    torch.save(_tied().state_dict(), tmp_path / "a.pt")
    _convert(tmp_path / "a.pt", tmp_path / "a.safetensors")
    for x, y in (("a.pt", "a.safetensors"), ("a.safetensors", "a.pt")):
        code, data = _run(["diff", str(tmp_path / x), str(tmp_path / y)])
        assert code == 0 and data["equal"], data
        head = next(k for k in data["keys"] if k["name"] == "head.weight")
        assert head["status"] == "equal" and "alias of embed.weight" in head["note"]
        assert any("head.weight -> embed.weight" in n for n in data["notes"])


def test_safetensors_save_model_copy_diffs_equal(tmp_path: Path) -> None:
    from safetensors.torch import save_model

    torch.save(_tied().state_dict(), tmp_path / "a.pt")
    save_model(_tied(), str(tmp_path / "b.safetensors"))
    code, data = _run(["diff", str(tmp_path / "a.pt"), str(tmp_path / "b.safetensors")])
    assert code == 0, data
    assert data["summary"] == {"removed": 0, "added": 0, "changed": 0, "equal": 4}


def test_an_alias_is_compared_by_value(tmp_path: Path) -> None:
    """A file whose head differs from its embedding (untied) is not equal to one recording the tie."""
    sd = _tied().state_dict()
    sd["head.weight"] = sd["head.weight"].clone() + 1
    torch.save(sd, tmp_path / "untied.pt")
    torch.save(_tied().state_dict(), tmp_path / "a.pt")
    _convert(tmp_path / "a.pt", tmp_path / "a.safetensors")
    code, data = _run(["diff", str(tmp_path / "untied.pt"), str(tmp_path / "a.safetensors")])
    assert code == 1
    head = next(k for k in data["keys"] if k["name"] == "head.weight")
    assert head["status"] == "changed" and head["max_abs"] == pytest.approx(1.0)


def test_sharing_difference_is_a_note_unless_strict(tmp_path: Path) -> None:
    """Stored apart (copies) on one side, tied on the other: equal values, a structure note."""
    tied = _tied().state_dict()
    apart = {k: v.clone() for k, v in tied.items()}
    torch.save(tied, tmp_path / "tied.pt")
    torch.save(apart, tmp_path / "apart.pt")
    code, data = _run(["diff", str(tmp_path / "tied.pt"), str(tmp_path / "apart.pt")])
    assert code == 0, data
    assert any("sharing differs for 2 keys" in n for n in data["notes"])
    code, data = _run(["diff", str(tmp_path / "tied.pt"), str(tmp_path / "apart.pt"), "--strict-sharing"])
    assert code == 1
    assert {k["name"] for k in data["keys"] if "shared_with" in k.get("changes", {})} == {"embed.weight", "head.weight"}


def test_dcp_copy_of_a_tied_model_diffs_equal(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    model = _tied()
    torch.save(model.state_dict(), tmp_path / "a.pt")
    with pytest.warns(UserWarning):  # single-process save: torch says it assumes no process group
        dcp.save(model.state_dict(), checkpoint_id=str(tmp_path / "dcp"))
    code, data = _run(["diff", str(tmp_path / "a.pt"), str(tmp_path / "dcp")])
    assert code == 0, data


def _gpt2(tmp_path: Path) -> torch.nn.Module:
    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32)).eval()
    model.save_pretrained(tmp_path / "hf")
    torch.save(model.state_dict(), tmp_path / "gpt2.pt")
    return model


def test_save_pretrained_copy_diffs_equal_by_the_config_tie(tmp_path: Path) -> None:
    """save_pretrained leaves lm_head.weight out and records nothing in the file: the tie is the
    model's (tie_word_embeddings, _tied_weights_keys), read from the config.json beside it."""
    from safetensors import safe_open

    _gpt2(tmp_path)
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys() and "lm_head.weight" not in (f.metadata() or {})
    code, data = _run(["diff", str(tmp_path / "gpt2.pt"), str(tmp_path / "hf")])
    assert code == 0, data
    head = next(k for k in data["keys"] if k["name"] == "lm_head.weight")
    assert "alias of transformer.wte.weight" in head["note"] and "config.json" in head["note"]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    code, data = _run(["diff", str(tmp_path / "gpt2.pt"), str(tmp_path / "hf")])
    assert code == 1 and data["summary"]["removed"] == 1  # untied by its config: the head is really missing


def test_round_trip_to_pt_loads_strictly_with_the_tie(tmp_path: Path) -> None:
    torch.save(_tied().state_dict(), tmp_path / "a.pt")
    _convert(tmp_path / "a.pt", tmp_path / "a.safetensors")
    _convert(tmp_path / "a.safetensors", tmp_path / "back.pt")
    sd = torch.load(tmp_path / "back.pt", weights_only=True)
    fresh = Tied()
    fresh.load_state_dict(sd, strict=True)
    assert torch.equal(fresh.head.weight, _tied().embed.weight)
    assert sd["head.weight"].untyped_storage().data_ptr() == sd["embed.weight"].untyped_storage().data_ptr()
    code, _ = _run(["diff", str(tmp_path / "a.pt"), str(tmp_path / "back.pt"), "--strict-sharing"])
    assert code == 0


def test_round_trip_of_a_save_pretrained_file_loads_strictly(tmp_path: Path) -> None:
    model = _gpt2(tmp_path)
    _convert(tmp_path / "hf" / "model.safetensors", tmp_path / "back.pt")
    sd = torch.load(tmp_path / "back.pt", weights_only=True)
    assert sd["lm_head.weight"].untyped_storage().data_ptr() == sd["transformer.wte.weight"].untyped_storage().data_ptr()
    type(model)(model.config).load_state_dict(sd, strict=True)
