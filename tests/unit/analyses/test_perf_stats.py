"""The numpy statistics kernels (inspect --stats, show, check --no-nan/--no-inf) against torch as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statecli.analyses import show as sh
from statecli.analyses import stats as sts
from statecli.io.values import torch_to_numpy

from . import torch_oracle as oracle

DTYPES = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2", "int64", "int32", "int16",
          "int8", "uint8", "bool"]
SPECIAL = [0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), float("-inf"), 65504.0, 1e-8, 448.0, 2.0 ** -24]


def _tensor(values: list[float], dtype: str) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float64)
    if dtype == "bool":
        return t != 0
    if dtype.startswith(("int", "uint")):
        t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0).clamp(-100, 100)
        return (t.abs() if dtype.startswith("uint") else t).to(torch.int64).to(getattr(torch, dtype))
    return t.to(torch.float32).to(getattr(torch, dtype))


def _check(t: torch.Tensor, bins: int = sts.BINS, sample: int = sts.SAMPLE) -> None:
    got = sts.tensor_stats(torch_to_numpy(t), bins=bins, sample=sample)
    try:
        want = oracle.tensor_stats(t, bins=bins, sample=sample)
    except ValueError:  # the torch kernel crashed when every sampled element was NaN/Inf
        assert got.p50_abs is None and got.finite and got.sampled == 0
        return
    exact = ("min", "max", "nan", "inf", "note", "numel", "zeros", "p50_abs", "p99_abs", "hist", "sampled", "finite",
             "finite_min", "finite_max", "exact")
    for f in exact:
        w, g = getattr(want, f), getattr(got, f)
        assert g == w or (g != g and w != w), f  # NaN where torch says NaN
    # mean and std are float64 sums: numpy's and torch's reduction orders differ in the last bits.
    for f in ("mean", "std", "finite_mean", "finite_std"):
        w, g = getattr(want, f), getattr(got, f)
        assert (w is None and g is None) or g == pytest.approx(w, rel=1e-12, abs=1e-300, nan_ok=True), f


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(SPECIAL), st.floats(-1e3, 1e3, width=32)), min_size=0, max_size=400),
       st.sampled_from(DTYPES), st.sampled_from([sts.SAMPLE, 7, 1]), st.integers(1, 40))
def test_stats_equal_torch(xs: list[float], dtype: str, sample: int, bins: int) -> None:
    _check(_tensor(xs, dtype), bins=bins, sample=sample)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stats_per_dtype_across_chunks(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sts, "CHUNK", 1000)
    monkeypatch.setattr(oracle, "CHUNK", 1000)
    rng = np.random.default_rng(0)
    xs = list(rng.standard_normal(4321) * 5) + SPECIAL
    _check(_tensor(xs, dtype), sample=500)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int32"])
def test_show_kernels_equal_torch(dtype: str) -> None:
    rng = np.random.default_rng(1)
    t = _tensor(list(rng.standard_normal(3000) * 50) + [float("nan"), float("inf")], dtype)
    s = oracle.tensor_stats(t)
    lo, hi = s.finite_min, s.finite_max
    assert sts.full_histogram(torch_to_numpy(t), lo, hi, 40) == oracle.full_histogram(t, lo, hi, 40)
    assert sh.first_values(torch_to_numpy(t), 10) == oracle.first_values(t, 10)
    if dtype in ("float32",):  # no ties: torch.topk and the index tie-break agree
        assert sh.extremes(torch_to_numpy(t), 5, chunk=700) == oracle.extremes(t, 5, chunk=700)
    small, large = sh.extremes(torch_to_numpy(t), 5)
    assert [v for _, v in small] == [v for _, v in oracle.extremes(t, 5)[0]]
    assert [v for _, v in large] == [v for _, v in oracle.extremes(t, 5)[1]]


def test_extremes_ties_take_the_lower_index() -> None:
    small, large = sh.extremes(np.array([3.0, 1.0, 1.0, 5.0, 5.0, 1.0]), 2)
    assert small == [(1, 1.0), (2, 1.0)] and large == [(3, 5.0), (4, 5.0)]
