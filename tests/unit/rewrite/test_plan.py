"""Specs and plans are frozen values; run() writes from a plan without changing it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from statecli.errors import UsageError
from statecli.notes import Note, NoteKind
from statecli.rewrite.plan import Plan, load, plan, plan_cast, plan_strip, saved_bytes
from statecli.rewrite.run import run
from statecli.rewrite.spec import CastSpec, ConvertSpec, MoveSpec, StripSpec, Target
from statecli.state import SCHEMA_VERSION


def _train(tmp_path: Path) -> Path:
    sd = {"lin.weight": torch.randn(3, 3), "bn.running_mean": torch.zeros(3), "bn.num_batches_tracked": torch.tensor(2)}
    path = tmp_path / "t.pt"
    torch.save({"model": sd, "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": []},
                "epoch": 1}, path)
    return path


def test_specs_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        CastSpec("half")  # type: ignore[misc]
    spec = StripSpec(optimizer=True, patterns=("^x",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.optimizer = False  # type: ignore[misc]
    assert Target().output is None and not Target().strict


def test_plan_is_frozen(tmp_path: Path) -> None:
    p = plan(*load(str(_train(tmp_path)), None), CastSpec(dtype="half"))
    assert p.cast and isinstance(p.drop, frozenset) and isinstance(p.notes, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.location = "cpu"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.cast[("", "x")] = "float16"  # type: ignore[index]
    with pytest.raises(AttributeError):
        p.drop.add(("", "x"))  # type: ignore[attr-defined]
    # a plan built from mutable collections freezes copies of them
    drop = {("", "a")}
    q = Plan(ck=p.ck, raw=p.raw, drop=frozenset(drop), cast={("", "b"): "float16"})
    drop.add(("", "c"))
    assert q.drop == {("", "a")} and dict(q.cast) == {("", "b"): "float16"}


def test_cast_plan_from_spec(tmp_path: Path) -> None:
    ck, raw = load(str(_train(tmp_path)), None)
    p = plan_cast(ck, raw, CastSpec(dtype="half"))
    assert dict(p.cast) == {("", "lin.weight"): "float16", ("", "bn.running_mean"): "float16"}
    assert any("never cast" in n.text for n in p.notes) and any("optimizer state" in n.text for n in p.notes)
    kept = plan_cast(ck, raw, CastSpec(dtype="half", keep=("running",), include_optimizer=True))
    assert not any("running" in name for _, name in kept.cast)
    assert any("exp_avg" in name for _, name in kept.cast)
    with pytest.raises(UsageError, match="--dtype"):
        plan_cast(ck, raw, CastSpec(dtype="int8"))
    with pytest.raises(UsageError, match="--only"):
        plan_cast(ck, raw, CastSpec(dtype="half", only="weights"))


def test_strip_plan_from_spec(tmp_path: Path) -> None:
    ck, raw = load(str(_train(tmp_path)), None)
    p = plan_strip(ck, raw, StripSpec(optimizer=True))
    assert all(name.startswith("optimizer.") for _, name in p.drop) and p.drop
    assert {c.what for c in p.changes} == {"removed"} and saved_bytes(p) == 12
    assert plan(ck, raw, StripSpec()).notes == (Note(NoteKind.REWRITE, "nothing matched: the output equals the input"),)
    with pytest.raises(UsageError, match="--pattern"):
        plan_strip(ck, raw, StripSpec(patterns=("(",)))


def test_move_and_convert_plans(tmp_path: Path) -> None:
    ck, raw = load(str(_train(tmp_path)), None)
    moved = plan(ck, raw, MoveSpec(device="cuda:1"))
    assert moved.location == "cuda:1" and moved.changes[0].detail == "cpu -> cuda:1"
    with pytest.raises(UsageError, match="meta"):
        plan(ck, raw, MoveSpec(device="meta"))
    converted = plan(ck, raw, ConvertSpec())
    assert not converted.drop and not converted.cast and not converted.changes


def _snapshot(p: Plan) -> tuple[object, ...]:
    return (p.drop, dict(p.cast), p.location, p.model_from, p.changes, p.notes, p.model, len(p.ck.entries))


@pytest.mark.parametrize("suffix,extra", [(".pt", {}), (".safetensors", {}), ("", {"max_shard_size": "1KB"}),
                                          ("", {"to": "dcp"})])
def test_run_leaves_the_plan_unchanged(tmp_path: Path, suffix: str, extra: dict) -> None:
    path = tmp_path / "s.pt"
    torch.save({"w": torch.tensor([1e6, 1.0]), "b": torch.zeros(2), "s": torch.eye(2).to_sparse()}, path)
    p = plan(*load(str(path), None), CastSpec(dtype="half"))
    before = _snapshot(p)
    out = tmp_path / f"out{suffix}"
    result = run(p, Target(output=str(out), drop_unsupported=True, **extra))
    assert _snapshot(p) == before
    # the result holds the plan as written: the sparse tensor dropped, the cast and its overflow counted
    assert ("", "s") in result.plan.drop and ("", "s") not in p.drop
    casts = [c for c in result.changes if c.what == "cast"]
    assert casts and casts[0].overflow == 1 and result.exit_code == 0
    assert [c.what for c in result.changes if c.name == "s"] == ["removed"]
    assert result.after is not None and not result.dry_run


def test_dry_run_result(tmp_path: Path) -> None:
    p = plan(*load(str(_train(tmp_path)), None), StripSpec(optimizer=True))
    r = run(p, Target(output=str(tmp_path / "o.pt"), dry_run=True))
    assert r.after is None and r.dry_run and not (tmp_path / "o.pt").exists()
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["schema_version"] == SCHEMA_VERSION and d["after"] is None and d["saved_bytes"] == 12 and d["out_format"] == "pt"
    assert {row["what"] for row in r.rows()} == {"removed"}


def test_every_rewrite_note_is_a_typed_record_from_where_it_is_made(tmp_path: Path) -> None:
    """Plan notes (cast, move's device note), write-time notes (a flat file leaves containers out) and
    the result's: each a Note of kind REWRITE, never a string render has to guess a kind for."""
    ck, raw = load(str(_train(tmp_path)), None)
    cast = plan(ck, raw, CastSpec(dtype="half"))
    moved = plan(ck, raw, MoveSpec(device="cuda:1"))
    written = run(cast, Target(output=str(tmp_path / "o.safetensors")))
    unmoved = run(moved, Target(output=str(tmp_path / "m.safetensors")))
    assert cast.notes and moved.device_notes and len(written.notes) > len(cast.notes) and unmoved.notes
    for notes in (cast.notes, moved.device_notes, written.notes, unmoved.notes):
        assert all(isinstance(n, Note) and n.kind is NoteKind.REWRITE for n in notes), notes
    assert written.to_dict()["notes"] == [n.text for n in written.notes]  # JSON keeps the texts


def test_diff_notes_are_typed_comparison_records(tmp_path: Path) -> None:
    from statecli.analyses.diff import diff
    from statecli.load import load_checkpoint

    w = torch.ones(2, 2)
    torch.save({"a": w, "b": w}, tmp_path / "tied.pt")
    torch.save({"a": w.clone(), "b": w.clone()}, tmp_path / "untied.pt")
    r = diff(load_checkpoint(str(tmp_path / "tied.pt")), load_checkpoint(str(tmp_path / "untied.pt")))
    assert r.notes and all(isinstance(n, Note) and n.kind is NoteKind.COMPARISON for n in r.notes)
    assert r.to_dict()["notes"] == [n.text for n in r.notes]
