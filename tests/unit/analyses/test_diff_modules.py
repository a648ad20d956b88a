"""`diff --by-module` draws its rows from the one ModuleTree: on a tied model each row's key count and
elements equal the tree's module (the tied tensor counted in both modules, as the summary counts it),
its figures equal the plain definition computed with torch, and browse's node overlay agrees."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from statecli.analyses.diff import diff
from statecli.analyses.inspect import summarize
from statecli.analyses.size import size_of
from statecli.load import load_checkpoint
from statecli.state import ROOT


def _tied_model() -> torch.nn.ModuleDict:
    model = torch.nn.ModuleDict({"emb": torch.nn.Embedding(100, 16), "body": torch.nn.Linear(16, 16),
                                 "head": torch.nn.Linear(16, 100, bias=False)})
    model["head"].weight = model["emb"].weight
    return model


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = _tied_model()
    a = tmp_path / "a.pt"
    torch.save(model.state_dict(), a)
    sa = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model["emb"].weight.mul_(1.5)  # moves both tied keys
        model["body"].bias.add_(0.25)
    sb = model.state_dict()
    sb["body.extra"] = torch.ones(3)  # a key only B has
    b = tmp_path / "b.pt"
    torch.save(sb, b)
    return a, b, sa, {k: v.clone() for k, v in sb.items()}


def test_per_module_rows_are_the_tree_modules_on_a_tied_model(pair: tuple[Path, Path, dict, dict]) -> None:
    a, b, sa, sb = pair
    ck_a, ck_b = load_checkpoint(str(a)), load_checkpoint(str(b))
    r = diff(ck_a, ck_b, depth=1, by_module=True)
    tree = size_of(ck_a).module_tree()  # A's own tree, as size and inspect --tree draw it
    rows = {m.module: m for m in r.modules}
    assert set(rows) == {"emb", "body", "head"}
    for name in ("emb", "head"):  # the tied storage: each module holds (and compares) every element
        assert rows[name].keys == tree[name].tensors == 1
        assert rows[name].numel == tree[name].numel == 100 * 16
    assert rows["body"].keys == tree["body"].tensors + 1  # B's extra key has its place in the row
    assert rows["body"].numel == tree["body"].numel  # only keys both sides hold are compared
    assert (rows["body"].changed, rows["body"].added) == (1, 1)
    assert rows["emb"].changed == rows["head"].changed == 1
    # the comparison's own tree: its root is every key, its numel the summary's (ties counted per key)
    assert r.tree is not None and r.tree.root.change is not None
    assert r.tree.root.change.keys == len(set(sa) | set(sb))
    assert r.tree.root.change.numel == summarize(ck_a.entries).total.numel == tree.root.numel
    for module in ("emb", "body", "head"):  # the overlay browse shows is the row diff prints
        node = r.tree[module].change
        assert node is not None and node.keys == rows[module].keys and node.numel == rows[module].numel
        assert node.rel_change == pytest.approx(rows[module].rel_change)


def test_row_figures_are_the_plain_definition(pair: tuple[Path, Path, dict, dict]) -> None:
    a, b, sa, sb = pair
    r = diff(load_checkpoint(str(a)), load_checkpoint(str(b)), depth=1, by_module=True)
    for m in r.modules:  # rel 1e-7: float32 rows are dotted before the float64 sum (changes.square_sum)
        keys = [k for k in sa if k.split(".")[0] == m.module and k in sb]
        va = torch.cat([sa[k].double().reshape(-1) for k in keys])
        vb = torch.cat([sb[k].double().reshape(-1) for k in keys])
        assert m.rel_change == pytest.approx(float((vb - va).norm() / va.norm()), rel=1e-7)
        assert m.cosine == pytest.approx(float(va @ vb / (va.norm() * vb.norm())), rel=1e-7)
        assert m.max_abs == pytest.approx(float((vb - va).abs().max()), rel=1e-6)


def test_top_level_keys_stay_in_the_root_row_with_every_container(tmp_path: Path) -> None:
    """With --all, a top-level value (its own container) is a top-level key of the comparison."""
    for name, epoch in (("a.pt", 3), ("b.pt", 4)):
        torch.save({"model": {"w": torch.zeros(2), "enc.w": torch.ones(2)}, "epoch": epoch}, tmp_path / name)
    r = diff(load_checkpoint(str(tmp_path / "a.pt")), load_checkpoint(str(tmp_path / "b.pt")), everything=True,
             depth=1, by_module=True)
    rows = {m.module: m for m in r.modules}
    assert rows[ROOT].changed == 1 and rows[ROOT].keys == sum(1 for k in r.keys if "." not in k.name)
    assert sum(m.keys for m in r.modules) == len(r.keys)
