"""numpy + ml_dtypes casts against torch's `.to(dtype)` as the oracle: the same bits for every value
but NaN (NaN stays NaN: torch's own NaN payload depends on its vector or scalar loop), and the same
overflow/underflow counts, for every pair of float dtypes statecli casts between."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from statecli.io.values import np_dtype, torch_to_numpy
from statecli.rewrite import cast as npcast
from statecli.rewrite.stream import count_losses

DTYPES = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]
PAIRS = [(a, b) for a, b in itertools.product(DTYPES, DTYPES) if a != b]
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
SPECIALS = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1.0, -1.0, 65504.0, 65519.99, 65520.0, -65520.0,
            448.0, 449.0, 463.99, 464.0, 465.0, 480.0, -1e6, 57344.0, 61439.0, 61440.0, 3.4e38, 3.5e38, -3.5e38,
            1e-300, 6e-8, 5.96e-8, 2.98e-8, 2.99e-8, 1e-40, 1.4e-45, 0.015625, 0.0078125, 0.001953125, 0.0009765625,
            1.5e-5, -1.5e-5, 1.0000001, 1.00048828125, 0.33333333333333331, 1e-320,
            # double rounding through float32, as torch does from float64
            1.0 + 2.0**-11 + 2.0**-40, 1.0 + 2.0**-8 + 2.0**-40, 1.0 + 2.0**-4 + 2.0**-40, 1.0 + 2.0**-3 + 2.0**-40]


def _pair(src: str, raw: bytes) -> tuple[np.ndarray, torch.Tensor]:
    dt = np_dtype(src)
    assert dt is not None
    n = len(raw) // dt.itemsize
    a = np.frombuffer(raw[:n * dt.itemsize], dtype=_UINT[dt.itemsize]).view(dt).copy()
    t = torch.frombuffer(bytearray(a.view(np.uint8).tobytes()), dtype=_INT[dt.itemsize]).view(getattr(torch, src)) \
        if n else torch.empty(0, dtype=getattr(torch, src))
    return a, t


def _specials(src: str) -> bytes:
    ref = torch.tensor(SPECIALS, dtype=torch.float64).to(getattr(torch, src))
    return torch_to_numpy(ref).view(np.uint8).tobytes()


def _check(src: str, dst: str, raw: bytes) -> None:
    a, t = _pair(src, raw)
    want = torch_to_numpy(t.to(getattr(torch, dst)))
    got = npcast.cast(a, dst)
    assert got.dtype == want.dtype and got.shape == want.shape
    wb, gb = want.view(_UINT[want.dtype.itemsize]), got.view(_UINT[got.dtype.itemsize])
    wn, gn = np.isnan(want.astype(np.float64)), np.isnan(got.astype(np.float64))
    assert np.array_equal(wn, gn), (src, dst, a[wn != gn][:5])
    bad = (wb != gb) & ~wn
    assert not bad.any(), (src, dst, a[bad][:5], wb[bad][:5], gb[bad][:5])
    # losses: the numpy count equals the torch count on the same values
    mine, theirs = npcast.Losses(), npcast.Losses()
    if npcast.lossy(src, dst) and t.numel():
        npcast.count(mine, a, got, dst)
        count_losses(theirs, t, t.to(getattr(torch, dst)), getattr(torch, dst))
    assert (mine.overflow, mine.underflow) == (theirs.overflow, theirs.underflow), (src, dst)


def test_ranges_are_torch_finfo() -> None:
    for name in DTYPES:
        fi = torch.finfo(getattr(torch, name))
        assert npcast.RANGE[name] == (fi.max, fi.tiny), name


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_special_values(src: str, dst: str) -> None:
    raw = _specials(src)
    for reps in (1, 3, 17):  # short and long arrays: torch's vector loop and its scalar tail
        _check(src, dst, raw * reps)


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_every_bit_pattern_of_narrow_sources(src: str, dst: str) -> None:
    size = np_dtype(src).itemsize  # type: ignore[union-attr]
    if size > 2:
        pytest.skip("covered by hypothesis")
    allbits = np.arange(1 << (8 * size), dtype=_UINT[size])
    _check(src, dst, allbits.tobytes())


@pytest.mark.parametrize(("src", "dst"), PAIRS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_bits(src: str, dst: str, data: st.DataObject) -> None:
    size = np_dtype(src).itemsize  # type: ignore[union-attr]
    raw = data.draw(st.binary(min_size=0, max_size=size * 80))
    _check(src, dst, raw)


@pytest.mark.parametrize(("src", "dst"), PAIRS)
@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=70),
       scale=st.sampled_from([1.0, 1e-3, 1e3, 1e5, 1e-8, 1e38, 1e-40]))
def test_random_values(src: str, dst: str, values: list[float], scale: float) -> None:
    ref = torch.tensor(values, dtype=torch.float64) * scale
    raw = torch_to_numpy(ref.to(getattr(torch, src))).view(np.uint8).tobytes()
    _check(src, dst, raw)
