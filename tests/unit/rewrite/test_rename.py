"""Key renames: order of the rules, model state only, nested mappings, collisions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from statecli.errors import UsageError
from statecli.rewrite.plan import load, plan
from statecli.rewrite.rename import Renames, rename_function, with_renames
from statecli.rewrite.run import run
from statecli.rewrite.spec import ConvertSpec, Target


def test_rules_apply_strip_then_rename_then_add() -> None:
    f = rename_function(Renames(strip_prefixes=("module.", "_orig_mod."), renames=(r"^(\d+)\.=layers.\1.",),
                                add_prefix="model."))
    assert f("module._orig_mod.0.weight") == "model.layers.0.weight"
    assert f("_orig_mod.module.head.bias") == "model.head.bias"
    with pytest.raises(UsageError, match="OLD=NEW"):
        rename_function(Renames(renames=("nope",)))


def test_nested_state_renames_whole_prefixes_only(tmp_path: Path) -> None:
    path = tmp_path / "n.pt"
    torch.save({"model": {"enc": {"w": torch.ones(2), "b": torch.zeros(2)}, "head": torch.ones(1)}, "epoch": 1}, path)
    ck, raw = load(str(path), None)
    p = with_renames(plan(ck, raw, ConvertSpec()), Renames(renames=(r"^enc\.=net.",)))
    run(p, Target(output=str(tmp_path / "o.pt")))
    got = torch.load(tmp_path / "o.pt", weights_only=True)
    assert set(got["model"]["net"]) == {"w", "b"} and "head" in got["model"] and got["epoch"] == 1
    bad = with_renames(plan(ck, raw, ConvertSpec()), Renames(renames=(r"^enc\.w=x",)))
    with pytest.raises(UsageError, match="nested mapping 'enc'"):
        run(bad, Target(output=str(tmp_path / "x.pt")))
    assert not (tmp_path / "x.pt").exists()


def test_no_match_is_a_note_and_plan_stays_frozen(tmp_path: Path) -> None:
    path = tmp_path / "p.pt"
    torch.save({"w": torch.ones(1)}, path)
    p = plan(*load(str(path), None), ConvertSpec())
    q = with_renames(p, Renames(strip_prefixes=("module.",)))
    assert not q.renames and any("no model key matched" in n.text for n in q.notes) and not p.notes
    with pytest.raises(TypeError):
        q.renames["a"] = "b"  # type: ignore[index]
