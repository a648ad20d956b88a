"""diff's per-module view: figures equal to numpy's on the same tensors, from the same value pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from statecli.analyses import changes
from statecli.analyses.diff import DiffResult, diff
from statecli.load import load_checkpoint


def _pair(tmp_path: Path, moved: tuple[int, ...] = (4, 5), dtype: torch.dtype = torch.float32) -> tuple[Path, Path]:
    """Six blocks of attention projections; B moves only the blocks in `moved` (q_proj and v_proj)."""
    g = torch.Generator().manual_seed(0)
    a: dict[str, torch.Tensor] = {"embed.weight": torch.randn(16, 8, generator=g)}
    for i in range(6):
        for p in ("q_proj", "k_proj", "v_proj"):
            a[f"blocks.{i}.attn.{p}.weight"] = torch.randn(8, 8, generator=g)
        a[f"blocks.{i}.norm.num_batches_tracked"] = torch.tensor(1000 + i)
    a = {k: v.to(dtype) if v.is_floating_point() else v for k, v in a.items()}
    b = {k: v.clone() for k, v in a.items()}
    for i in moved:
        for p in ("q_proj", "v_proj"):
            k = f"blocks.{i}.attn.{p}.weight"
            b[k] = (a[k].double() + 0.05 * (i + 1) * torch.randn(8, 8, generator=g, dtype=torch.float64)).to(dtype)
    pa, pb = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(a, pa)
    torch.save(b, pb)
    return pa, pb


def _run(pa: Path, pb: Path, **kw: object) -> DiffResult:
    return diff(load_checkpoint(str(pa)), load_checkpoint(str(pb)), **kw)  # type: ignore[arg-type]


def _reference(pa: Path, pb: Path, module: str, rtol: float = 1e-5, atol: float = 1e-8) -> dict[str, float]:
    sa, sb = torch.load(pa, weights_only=True), torch.load(pb, weights_only=True)
    names = [k for k in sa if k.startswith(module + ".") and sa[k].is_floating_point()]
    a = np.concatenate([sa[k].double().numpy().ravel() for k in names])
    b = np.concatenate([sb[k].double().numpy().ravel() for k in names])
    close = sum(int(torch.isclose(sa[k], sb[k], rtol=rtol, atol=atol).sum()) for k in sa if k.startswith(module + "."))
    numel = sum(sa[k].numel() for k in sa if k.startswith(module + "."))
    return {"rel": float(np.linalg.norm(b - a) / np.linalg.norm(a)),
            "cos": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
            "max_abs": float(np.abs(b - a).max()), "over": (numel - close) / numel}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_module_figures_equal_numpy(tmp_path: Path, dtype: torch.dtype) -> None:
    pa, pb = _pair(tmp_path, dtype=dtype)
    r = _run(pa, pb, depth=2)
    mods = {m.module: m for m in r.modules}
    assert list(mods) == ["embed", *(f"blocks.{i}" for i in range(6))]  # model order
    for name in ("blocks.0", "blocks.4", "blocks.5"):
        ref, m = _reference(pa, pb, name), mods[name]
        # float32 work dtypes are summed from float32 rows of |a-b| (compare.py's SUM_ROW): ~1e-8 relative
        assert m.rel_change == pytest.approx(ref["rel"], rel=1e-7, abs=1e-15)
        assert m.cosine == pytest.approx(ref["cos"], rel=1e-7)
        assert m.max_abs == pytest.approx(ref["max_abs"], rel=1e-6, abs=0)
        assert m.over_tol == pytest.approx(ref["over"])
        assert m.keys == 4 and m.compared == 4 and m.numel == 3 * 64 + 1


def test_sort_by_change_ranks_exactly_the_moved_blocks_first(tmp_path: Path) -> None:
    pa, pb = _pair(tmp_path, moved=(1, 4))
    r = _run(pa, pb, depth=2, sort="change")
    ranked = [m.module for m in r.modules]
    assert set(ranked[:2]) == {"blocks.1", "blocks.4"} and ranked[0] == "blocks.4"  # moved 5x vs 2x
    assert all(m.rel_change == 0 and m.cosine == pytest.approx(1.0) for m in r.modules[2:])
    deep = _run(pa, pb, depth=4, sort="change")
    assert {m.module for m in deep.modules[:4]} == {f"blocks.{i}.attn.{p}" for i in (1, 4) for p in ("q_proj", "v_proj")}


def test_integer_tensors_count_as_keys_but_not_in_the_norms(tmp_path: Path) -> None:
    pa, pb = _pair(tmp_path, moved=())
    sb = torch.load(pb, weights_only=True)
    sb["blocks.2.norm.num_batches_tracked"] += 1
    torch.save(sb, pb)
    m = {m.module: m for m in _run(pa, pb, depth=2).modules}["blocks.2"]
    assert m.changed == 1 and m.mismatched == 1 and m.rel_change == 0.0 and m.max_abs == 1.0


def test_nan_and_zero_tensors(tmp_path: Path) -> None:
    a = {"l.w": torch.tensor([1.0, float("nan"), 3.0, 4.0]), "z.w": torch.zeros(3)}
    b = {"l.w": torch.tensor([1.0, float("nan"), 3.0, 5.0]), "z.w": torch.ones(3)}
    torch.save(a, tmp_path / "a.pt")
    torch.save(b, tmp_path / "b.pt")
    mods = {m.module: m for m in _run(tmp_path / "a.pt", tmp_path / "b.pt").modules}
    # NaN positions are left out of the norms (and counted over tolerance, as torch.allclose does)
    assert mods["l"].rel_change == pytest.approx(1 / np.sqrt(1 + 9 + 16)) and mods["l"].over_tol == 0.5
    assert mods["z"].rel_change == float("inf") and mods["z"].cosine is None


def test_identical_chunks_use_the_exact_square_sum() -> None:
    x = torch.randn(3 * changes.ROW + 17, dtype=torch.float32) * 7
    assert changes.square_sum(x, torch) == pytest.approx(float((x.double() ** 2).sum()), rel=1e-6)
    x[5] = float("inf")
    assert changes.square_sum(x, torch) == pytest.approx(float((x.double()[torch.isfinite(x)] ** 2).sum()), rel=1e-6)


def test_modules_in_json_and_csv_rows(tmp_path: Path) -> None:
    pa, pb = _pair(tmp_path)
    r = _run(pa, pb, depth=2, by_module=True)
    d = r.to_dict()
    assert d["module_depth"] == 2 and [m["module"] for m in d["modules"]][:2] == ["embed", "blocks.0"]
    assert set(changes.MODULE_COLUMNS) == set(d["modules"][0])
    assert r.columns == changes.MODULE_COLUMNS and r.rows()[5]["module"] == "blocks.4"
    with pytest.raises(Exception, match="unknown --sort"):
        _run(pa, pb, sort="size")
