"""The numpy diff kernel against torch as the oracle: every figure equal, for every dtype pair statecli reads."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statecli.analyses.compare import Partial, compare_chunk, promote, work_dtype
from statecli.analyses.diff import _compare_pair, _Work
from statecli.io.values import torch_to_numpy

FLOATS = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]
INTS = ["int64", "int32", "int16", "int8", "uint8", "bool"]
WIDE = ["uint16", "uint32", "uint64"]
COMPLEX = ["complex64", "complex128"]
ALL = FLOATS + INTS + WIDE  # what the numpy kernel compares; complex pairs go through torch (|a-b| differs in the last bit)
SPECIAL = [0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), float("-inf"), 65504.0, 70000.0, 1e-8, -3e38, 3e38,
           448.0, 500.0, 2.0 ** -24, 1e-45, 123456789.0]


@pytest.mark.parametrize(("a", "b"), list(itertools.product(ALL + COMPLEX, ALL + COMPLEX)))
def test_promotion_table_is_torchs(a: str, b: str) -> None:
    try:
        want = str(torch.promote_types(getattr(torch, a), getattr(torch, b))).removeprefix("torch.")
    except RuntimeError:
        want = "float32"  # statecli's rule where torch has none
    assert promote(a, b) == want


def _tensor(values: list[float], dtype: str) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float64)
    if dtype.startswith(("int", "uint")):
        t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0).clamp(-1e6, 1e6)
        if dtype.startswith("uint"):
            t = t.abs()
        return t.to(torch.int64).to(getattr(torch, dtype))
    if dtype == "bool":
        return t != 0
    if dtype.startswith("complex"):
        return torch.complex(t, t.flip(0)).to(getattr(torch, dtype))
    if dtype.startswith("float8"):
        return t.to(torch.float32).to(getattr(torch, dtype))
    return t.to(getattr(torch, dtype))


def _oracle(ta: torch.Tensor, tb: torch.Tensor, rtol: float, atol: float, equal_nan: bool) -> _Work:
    kd = _Work("x", "equal")  # type: ignore[arg-type]
    _compare_pair(kd, ta, tb, rtol, atol, equal_nan, torch)
    return kd


def _same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or x == y


def _check(ta: torch.Tensor, tb: torch.Tensor, rtol: float, atol: float, equal_nan: bool) -> None:
    da, db = str(ta.dtype).removeprefix("torch."), str(tb.dtype).removeprefix("torch.")
    kd = _oracle(ta, tb, rtol, atol, equal_nan)
    got: Partial = compare_chunk(torch_to_numpy(ta), torch_to_numpy(tb), da, db, rtol, atol, equal_nan)
    assert got.bad == kd.mismatched
    if da == db and da in ("float32", "float64"):  # torch.isclose itself, not only statecli's torch path
        close = torch.isclose(ta, tb, rtol=rtol, atol=atol, equal_nan=equal_nan)
        assert got.bad == ta.numel() - int(close.sum()), (ta, tb)
    assert _same(got.max_abs, kd.max_abs), (got.max_abs, kd.max_abs)
    assert _same(got.max_rel, kd.max_rel), (got.max_rel, kd.max_rel)
    note = f"{got.nonfinite_bad} element(s) differ by NaN or Inf (not counted in max_abs)" if got.nonfinite_bad else None
    assert note == kd.note
    if work_dtype(promote(da, db)) != "int64":
        assert kd.sums is not None
        # float64 sums: the summation order of numpy's and torch's BLAS differ; the float32 square
        # sum of identical chunks is documented at ~1e-8. Float32 work takes |a-b| in float32, rounded
        # once (<= 2^-24 relative), so sum((a-b)^2) may differ by 2 x 2^-24 even for one element.
        rel = {"dd": 2.5e-7} if work_dtype(promote(da, db)) == "float32" else {}
        for f in ("aa", "bb", "ab", "dd"):
            assert getattr(got.sums, f) == pytest.approx(getattr(kd.sums, f), rel=rel.get(f, 1e-7), abs=1e-300)


values = st.lists(st.one_of(st.sampled_from(SPECIAL), st.floats(-1e4, 1e4, width=32)), min_size=1, max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.data(), st.sampled_from(ALL), st.sampled_from(ALL), st.booleans(),
       st.sampled_from([(1e-5, 1e-8), (0.0, 0.0), (1e-2, 1e-3)]))
def test_figures_equal_torch(xs: list[float], data: st.DataObject, da: str, db: str, equal_nan: bool,
                             tol: tuple[float, float]) -> None:
    perturb = data.draw(st.lists(st.sampled_from([0.0, 0.0, 1e-6, 1e-3, 1.0, float("nan")]), min_size=len(xs),
                                 max_size=len(xs)))
    ys = [x + p for x, p in zip(xs, perturb)]
    _check(_tensor(xs, da), _tensor(ys, db), tol[0], tol[1], equal_nan)


@pytest.mark.parametrize("dtype", ALL)
def test_identical_and_near_values_per_dtype(dtype: str) -> None:
    rng = np.random.default_rng(0)
    xs = list(rng.standard_normal(5000) * 10) + SPECIAL
    ta = _tensor(xs, dtype)
    for ys in (xs, [x * (1 + 1e-4) for x in xs], [x + 1e-6 for x in xs]):
        for equal_nan in (False, True):
            _check(ta, _tensor(ys, dtype), 1e-5, 1e-8, equal_nan)


def test_large_chunk_crosses_blocks() -> None:
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.standard_normal(200_003).astype(np.float32))
    b = a + torch.from_numpy((rng.standard_normal(200_003) * 1e-4).astype(np.float32))
    b[17] = float("nan")
    b[100_000] = float("inf")
    _check(a, b, 1e-5, 1e-8, False)
    _check(a.to(torch.bfloat16), b, 1e-3, 1e-5, True)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_finite_against_infinite_is_never_close(dtype: str) -> None:
    """|1 - inf| <= atol + rtol*|inf| holds (inf <= inf), but torch.isclose wants a finite difference."""
    inf = float("inf")
    a = torch.tensor([1.0, 2.0, inf, 3.0, -inf, inf]).to(getattr(torch, dtype))
    b = torch.tensor([inf, 2.0, 1.0, 3.0, -inf, -inf]).to(getattr(torch, dtype))
    got = compare_chunk(torch_to_numpy(a), torch_to_numpy(b), dtype, dtype, 1e-5, 1e-8, False)
    want = a.numel() - int(torch.isclose(a.float(), b.float(), rtol=1e-5, atol=1e-8).sum())
    assert got.bad == want == 3
    assert _oracle(a, b, 1e-5, 1e-8, False).mismatched == want

