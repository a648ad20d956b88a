"""inspect --stats and show: every figure equals numpy's on the same tensor, for every float dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from statecli.analyses import stats as st
from statecli.analyses.show import show
from statecli.load import load_checkpoint

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.float8_e4m3fn, torch.float8_e5m2]


def _values(dtype: torch.dtype, n: int = 5000) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, generator=g, dtype=torch.float64) * 3
    x[::7] = 0.0
    if dtype.itemsize >= 2:  # float8 has no Inf (e4m3fn) or makes every overflow one: keep it finite
        x[3], x[11] = float("nan"), float("inf")
    return x.to(dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_stats_equal_numpy(dtype: torch.dtype) -> None:
    t = _values(dtype)
    s = st.tensor_stats(t)
    a = t.to(torch.float64).numpy()
    fin = a[np.isfinite(a)]
    assert (s.numel, s.nan, s.inf, s.zeros) == (a.size, np.isnan(a).sum(), np.isinf(a).sum(), (a == 0).sum())
    assert s.finite_min == fin.min() and s.finite_max == fin.max()
    assert s.finite_mean == pytest.approx(fin.mean(), rel=1e-12, abs=1e-15)
    assert s.finite_std == pytest.approx(fin.std(ddof=1), rel=1e-12)
    whole = t.to(torch.float64)  # the headline figures are torch's, NaN and Inf included
    for got, want in ((s.min, whole.min()), (s.max, whole.max()), (s.mean, whole.mean()), (s.std, whole.std())):
        assert got == pytest.approx(float(want), rel=1e-12, nan_ok=True)
    assert [s.p50_abs, s.p99_abs] == pytest.approx(np.percentile(np.abs(fin), [50, 99]), rel=1e-12)
    assert list(s.hist) == np.histogram(fin, bins=st.BINS)[0].tolist()
    assert s.sampled == s.finite == fin.size
    d = s.to_dict()
    assert d["zero_frac"] == pytest.approx((a == 0).mean()) and d["histogram"]["exact"] is True


def test_chunks_merge_to_the_same_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _values(torch.float32, 10_001)
    whole = st.tensor_stats(t)
    monkeypatch.setattr(st, "CHUNK", 999)  # eleven chunks: Chan's merge and the sample's alignment
    chunked = st.tensor_stats(t)
    assert chunked.hist == whole.hist and chunked.finite_min == whole.finite_min and chunked.zeros == whole.zeros
    assert chunked.finite_std == pytest.approx(whole.finite_std, rel=1e-12)
    assert chunked.finite_mean == pytest.approx(whole.finite_mean, rel=1e-12)


def test_large_tensors_use_a_random_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _values(torch.float32, 10_000)
    monkeypatch.setattr(st, "CHUNK", 777)
    s = st.tensor_stats(t, sample=1000)
    positions = st.sample_positions(10_000, 1000)
    assert positions.size == 1000 and len(set(positions % 10)) == 10  # not every 10th element
    a = t.double().numpy()[positions]
    fin = a[np.isfinite(a)]
    assert s.sampled == fin.size < s.finite and s.exact is False and s.to_dict()["exact"] is False
    assert [s.p50_abs, s.p99_abs] == pytest.approx(np.percentile(np.abs(fin), [50, 99]))
    # the sample is binned over the exact range of the whole tensor
    assert list(s.hist) == np.histogram(fin, bins=st.BINS, range=(s.finite_min, s.finite_max))[0].tolist()
    full = st.full_histogram(t, s.finite_min, s.finite_max, 40)
    every = t.double().numpy()
    assert full == np.histogram(every[np.isfinite(every)], bins=40)[0].tolist()


def test_the_sample_does_not_alias_with_the_row_length() -> None:
    # 384-wide rows, every third column small: an every-3rd-element sample sees only the small ones.
    rows = np.where(np.arange(384) % 3 == 0, 1.0, 100.0).astype(np.float32)
    t = np.tile(rows, 1000)
    s = st.tensor_stats(t, sample=t.size // 3)
    assert s.exact is False and s.p50_abs == 100.0 and s.p99_abs == 100.0
    assert 0.6 < s.hist[-1] / s.sampled < 0.73  # two thirds of the values are 100


def test_torch_figures_and_finite_figures_are_separate() -> None:
    t = torch.tensor([0.004, -1.0, float("inf"), 2.0])
    s = st.tensor_stats(t)
    assert (s.min, s.max, s.mean) == (float(t.min()), float(t.max()), float(t.double().mean())) == (-1.0, np.inf, np.inf)
    assert np.isnan(s.std) and np.isnan(float(t.double().std()))
    assert (s.finite_min, s.finite_max, s.inf) == (-1.0, 2.0, 1)
    both = st.tensor_stats(torch.tensor([1.0, float("inf"), float("-inf")]))
    assert (both.min, both.max) == (-np.inf, np.inf) and np.isnan(both.mean)
    nan = st.tensor_stats(torch.tensor([1.0, float("nan")]))
    assert all(np.isnan(v) for v in (nan.min, nan.max, nan.mean, nan.std)) and nan.finite_max == 1.0


def test_constant_empty_and_non_finite_tensors() -> None:
    c = st.tensor_stats(torch.full((10,), 2.5))
    assert c.std == 0.0 and list(c.hist) == np.histogram(np.full(10, 2.5), bins=st.BINS)[0].tolist()
    assert st.tensor_stats(torch.empty(0)).note == "empty"
    nan = st.tensor_stats(torch.tensor([float("nan"), float("inf")]))
    assert nan.note == "no finite values" and nan.to_dict()["nan_frac"] == 0.5


def test_show_reads_one_tensor_in_full(tmp_path: Path) -> None:
    w = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) - 5
    torch.save({"enc.layer.w": w, "enc.layer.b": torch.zeros(4), "enc.other": torch.ones(2), "head.w": torch.ones(3)},
               tmp_path / "m.pt")
    ck = load_checkpoint(str(tmp_path / "m.pt"))
    r = show(ck, "enc.layer.w", bins=8, first=3, extreme=2)
    assert r.first == (-5.0, -4.0, -3.0)
    assert [(x.index, x.value) for x in r.largest] == [((1, 2, 3), 18.0), ((1, 2, 2), 17.0)]
    assert [(x.index, x.value) for x in r.smallest] == [((0, 0, 0), -5.0), ((0, 0, 1), -4.0)]
    assert r.stats is not None and list(r.stats.hist) == np.histogram(w.numpy(), bins=8)[0].tolist()
    assert r.edges() == pytest.approx(np.histogram(w.numpy(), bins=8)[1].tolist())
    assert [lv.path for lv in r.path] == ["(root)", "enc", "enc.layer"] and [lv.tensors for lv in r.path] == [4, 3, 2]
    assert {s.name for s in r.siblings} == {"enc.layer.w", "enc.layer.b"}
    assert [row["count"] for row in r.rows()] == list(r.stats.hist)
    with pytest.raises(Exception, match="did you mean: enc.layer.w"):
        show(ck, "enc.layer.ww")
