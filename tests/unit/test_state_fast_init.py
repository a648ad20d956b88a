"""state's generated __init__ (one __dict__ update) keeps the dataclass contract; gc_paused restores."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import pickle

import pytest

from statecli.state import Entry, Evidence, Kind, Source, TensorInfo, gc_paused


@pytest.mark.parametrize("cls", [TensorInfo, Entry])
def test_signature_is_the_dataclass_one(cls: type) -> None:
    params = inspect.signature(cls).parameters
    fields = dataclasses.fields(cls)
    assert list(params) == [f.name for f in fields]
    for f in fields:
        want = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert params[f.name].default == want


def test_frozen_equal_hashable_picklable() -> None:
    t = TensorInfo("float16", (2, 3), stride=(3, 1))
    assert (t.numel, t.nbytes) == (6, 12)
    assert t == TensorInfo("float16", (2, 3), stride=(3, 1)) and hash(t) == hash(TensorInfo("float16", (2, 3), stride=(3, 1)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.dtype = "float32"  # type: ignore[misc]
    assert dataclasses.replace(t, dtype="float32").nbytes == 24
    assert pickle.loads(pickle.dumps(t)) == t
    assert TensorInfo("float32", ()).numel == 1
    e = Entry("a", t)
    assert e.kind is Kind.UNKNOWN and e.evidence == Evidence(Source.NOT_TENSOR) and e.group == ""
    with pytest.raises(TypeError):
        TensorInfo("float32")  # type: ignore[call-arg]


def test_gc_paused_restores_state() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
