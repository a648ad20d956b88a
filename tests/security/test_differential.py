"""Differential test: for generated opcode streams, every global CPython's C unpickler resolves (a
plain pickle.Unpickler whose find_class only records and returns an inert stub) is reported by
statecli's stream scanner, whatever FRAME lengths, memo games or nested bytes the stream holds."""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from statecli.pickle.pickles import Findings, scan_stream  # noqa: E402
from statecli.pickle.verdict import normalize  # noqa: E402

NAMES = [("os", "system"), ("builtins", "getattr"), ("collections", "OrderedDict"), ("torch", "float32"),
         ("torch._utils", "_rebuild_tensor_v2"), ("functools", "partial"), ("__builtin__", "eval"),
         ("logging", "FileHandler"), ("argparse", "Namespace"), ("torch", "FloatStorage"), ("m", "a.b")]


class _Any:
    """Accepts everything the pickle machine may do to an object; runs nothing."""

    def __init__(self, *a: Any, **k: Any) -> None:
        pass

    def __call__(self, *a: Any, **k: Any) -> _Any:
        return _Any()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, k: Any, v: Any) -> None:
        pass

    def append(self, v: Any) -> None:
        pass

    def extend(self, v: Any) -> None:
        pass


class _Recorder(pickle.Unpickler):
    def __init__(self, f: Any) -> None:
        super().__init__(f, encoding="latin1")
        self.seen: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        m, n = normalize(module, name)
        self.seen.append(f"{m}.{n}")
        return _Any

    def persistent_load(self, pid: Any) -> Any:
        return _Any()


def _reference(data: bytes) -> set[str]:
    """Globals the C unpickler resolves, reading pickle after pickle as a repeated load() would."""
    f = io.BytesIO(data)
    seen: set[str] = set()
    while f.tell() < len(data):
        start = f.tell()
        up = _Recorder(f)
        try:
            up.load()
        except Exception:  # noqa: BLE001
            seen |= set(up.seen)
            break
        seen |= set(up.seen)
        if f.tell() <= start:
            break
    return seen


def _uni(s: str) -> bytes:
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _op() -> st.SearchStrategy[bytes]:
    name = st.sampled_from(NAMES)
    return st.one_of(
        name.map(lambda mn: b"c" + mn[0].encode() + b"\n" + mn[1].encode() + b"\n"),
        name.map(lambda mn: _uni(mn[0]) + _uni(mn[1]) + b"\x93"),
        st.text("abcos.", max_size=8).map(_uni),
        st.integers(0, 255).map(lambda i: b"K" + bytes([i])),
        st.integers(0, 4).map(lambda i: b"q" + bytes([i])),
        st.integers(0, 4).map(lambda i: b"h" + bytes([i])),
        st.integers(0, 64).map(lambda n: b"\x95" + struct.pack("<Q", n)),
        st.sampled_from([b"(", b"t", b"\x85", b"\x86", b"R", b"b", b"0", b"}", b"]", b"a", b"s", b"\x94", b")",
                         b"\x81", b"N", b"."]),
    )


def _stream() -> st.SearchStrategy[bytes]:
    body = st.lists(_op(), max_size=24).map(b"".join)
    wrapped = st.tuples(body, body).map(lambda ab: ab[0] + b"B" + struct.pack("<I", len(ab[1])) + ab[1])
    return st.tuples(st.sampled_from([2, 4, 5]), st.one_of(body, wrapped), st.booleans()).map(
        lambda t: b"\x80" + bytes([t[0]]) + t[1] + (b"." if t[2] else b""))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_stream())
def test_every_global_the_c_unpickler_resolves_is_reported(data: bytes) -> None:
    want = _reference(data)
    acc = Findings()
    scan_stream(data, "x", acc)
    got = {g.name for g in acc.globals}
    assert want <= got, (want - got, data)
