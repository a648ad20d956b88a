"""inspect's one-pass totals (summarize) against the per-bucket definition (bucket/unique_storage_bytes):
shared storages counted once per bucket, meta tensors counted without bytes, anonymous storage."""

from __future__ import annotations

import itertools
import random

from statecli.analyses.inspect import Bucket, bucket, summarize
from statecli.analyses.size import size_of
from statecli.state import Checkpoint, Entry, Evidence, Kind, Source, TensorInfo
from statecli.storage import storage_overlap, unique_storage_bytes


def _entries(seed: int) -> list[Entry]:
    rnd = random.Random(seed)
    out = []
    for i in range(300):
        dtype = rnd.choice(["float32", "float16", "int64"])
        shape = (rnd.randint(0, 5), rnd.randint(1, 4))
        key = rnd.choice([None, f"s{rnd.randint(0, 120)}"])
        device = rnd.choice(["cpu", "cpu", "cuda:0", "meta"])
        t = TensorInfo(dtype, shape, device, storage_key=key, source=rnd.choice(["a", "b"]),
                       storage_nbytes=rnd.choice([None, rnd.randint(0, 400)]))
        kind = rnd.choice([Kind.PARAMETER, Kind.BUFFER, Kind.OPTIMIZER])
        out.append(Entry(f"m{i % 7}.x{i}", t, kind=kind, evidence=Evidence(Source.RULE, "float")))
    out.append(Entry("epoch", value=3, value_type="int", kind=Kind.METADATA))
    return out


def _by(entries: list[Entry], attr: str) -> tuple[Bucket, ...]:
    keyf = (lambda e: e.kind) if attr == "kind" else (lambda e: getattr(e.tensor, attr))
    tensors = [e for e in entries if e.tensor is not None]
    groups = {k: list(g) for k, g in itertools.groupby(sorted(tensors, key=lambda e: str(keyf(e))), key=keyf)}
    return tuple(sorted((bucket(k, v) for k, v in groups.items()), key=lambda b: (-b.nbytes, b.key)))


def test_summarize_equals_bucket_definition() -> None:
    for seed in range(20):
        es = _entries(seed)
        s = summarize(es)
        assert s.by_kind == _by(es, "kind")
        assert s.by_dtype == _by(es, "dtype")
        assert s.by_device == _by(es, "device")
        assert s.total == bucket("total", es)
        assert s.view_nbytes == unique_storage_bytes(es)[0]
        groups: dict[tuple, list[str]] = {}
        for e in es:
            t = e.tensor
            if t is not None and t.storage_key is not None and t.device != "meta":
                groups.setdefault((t.source, t.storage_key), []).append(e.name)
        assert [(x.storage, x.names) for x in s.shared] == [(k[1], tuple(v)) for k, v in groups.items() if len(v) > 1]


def test_summarize_empty() -> None:
    s = summarize([])
    assert s.total == Bucket("total", 0, 0, 0) and s.by_kind == () and s.shared == ()


def test_size_modules_count_each_storage_once_per_module() -> None:
    """A module's bytes are the distinct storages of its own tensors: a storage two modules share
    counts in both (it used to be billed to the first holder, the other showing 0 B)."""
    for seed in range(10):
        es = [e for e in _entries(seed) if e.tensor is not None]
        r = size_of(Checkpoint(path="x", format="torch zip", entries=es, container=""), depth=1)
        groups: dict[str, list[Entry]] = {}
        for e in es:
            groups.setdefault(e.name.split(".")[0], []).append(e)
        want = {m: unique_storage_bytes(g)[1] for m, g in groups.items()}
        assert {m.module: m.bucket.nbytes for m in r.by_module} == want
        assert (r.duplicate_nbytes, r.outside_nbytes) == storage_overlap(es)
        assert r.top == tuple(sorted(es, key=lambda e: (-(e.tensor.nbytes if e.tensor else 0), e.name))[:10])
