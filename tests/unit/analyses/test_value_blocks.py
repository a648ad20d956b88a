"""Value passes in blocks that span tensors (io/blocks.py): small tensors batched into one read, big ones
split, file order, the same figures as one tensor at a time; and every pass reads through the format
handler's `values` hook, so a format with its own reader (dequantized values) plugs in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from statecli.analyses import compare_pool, stats_pass
from statecli.analyses import stats as st
from statecli.analyses.check import check
from statecli.analyses.diff import diff
from statecli.analyses.show import show
from statecli.formats import registry
from statecli.io import blocks
from statecli.io.values import ValueReader, value_reader
from statecli.load import load_checkpoint
from statecli.state import Checkpoint


def _tensors(n_small: int = 40) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    out = {f"s{i:03d}": torch.randn(50 + i, generator=g) for i in range(n_small)}
    out["big"] = torch.randn(20_000, generator=g)
    out["nan"] = torch.tensor([1.0, float("nan"), float("inf"), 2.0])
    out["half"] = torch.randn(300, generator=g).half()
    return out


def _infos(ck: Checkpoint) -> tuple[list[Any], list[str]]:
    es = [e for e in ck.entries if e.tensor is not None]
    return [e.tensor for e in es], [e.name for e in es]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_blocks_batch_small_tensors_split_big_ones_in_file_order(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    tensors = _tensors()
    (save_file(tensors, str(path)) if suffix == ".safetensors" else torch.save(tensors, path))
    ck = load_checkpoint(str(path))
    infos, _ = _infos(ck)
    infos = infos[::-1]  # the caller's order does not matter: blocks follow the file
    with value_reader(ck) as reader:
        plan, rest = blocks.plan(reader, infos, block=16 << 10)
        assert rest == []
        assert len(plan) < len(infos)  # small tensors share reads
        covered: dict[int, list[tuple[int, int]]] = {}
        starts = []
        for b in plan:
            assert b.nbytes <= 16 << 10
            starts.append(b.start)
            for p in b.pieces:
                covered.setdefault(p.index, []).append((p.lo, p.hi))
                span = reader.flat_span(infos[p.index], p.lo, p.hi)
                assert span is not None and span[1] == b.start + p.at
        assert starts == sorted(starts)  # one pass front to back
        big = next(i for i, t in enumerate(infos) if t.numel == 20_000)
        assert len(covered[big]) > 1  # 80 KB split over several reads
        for i, t in enumerate(infos):
            spans = covered[i]
            assert spans[0][0] == 0 and spans[-1][1] == t.numel
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_block_pass_gives_the_figures_of_one_tensor_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    tensors = _tensors()
    save_file(tensors, str(path))
    monkeypatch.setattr(blocks, "BLOCK", 4096)
    ck = load_checkpoint(str(path))
    got = stats_pass.stats_for(ck, list(ck.entries))
    for name, t in tensors.items():
        want = st.tensor_stats(t.numpy() if t.dtype != torch.half else t.float().numpy().astype(np.float16),
                               sample=st.SAMPLE)
        g = got[name]
        for f in ("numel", "nan", "inf", "zeros", "finite", "sampled", "hist", "p50_abs", "p99_abs", "finite_min",
                  "finite_max", "exact"):
            assert getattr(g, f) == getattr(want, f), (name, f)
        assert g.finite_mean == pytest.approx(want.finite_mean, rel=1e-12)
        assert g.finite_std == pytest.approx(want.finite_std, rel=1e-12)
    with value_reader(ck) as reader:
        infos, names = _infos(ck)
        counts = dict(zip(names, stats_pass.non_finite(reader, infos, names)))
    assert counts["nan"] == (1, 1) and all(c == (0, 0) for n, c in counts.items() if n != "nan")


def test_diff_tasks_span_pairs(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.safetensors"
    ta = _tensors()
    torch.save(ta, a)
    save_file({k: v + 1 for k, v in ta.items()}, str(b))
    ca, cb = load_checkpoint(str(a)), load_checkpoint(str(b))
    ia = {e.name: e.tensor for e in ca.entries if e.tensor is not None}
    ib = {e.name: e.tensor for e in cb.entries if e.tensor is not None}
    pairs = [(i, ia[k], ib[k]) for i, k in enumerate(sorted(ia))]
    with value_reader(ca) as ra, value_reader(cb) as rb:
        work, rest = compare_pool.tasks(ra, rb, pairs, 0.0, 0.0, False, task_bytes=8 << 10)
    assert rest == [] and len(work) < len(pairs)  # many pairs per task
    assert sum(len(t.pieces) for t in work) >= len(pairs)
    assert [p.a[1] for t in work for p in t.pieces] == sorted(p.a[1] for t in work for p in t.pieces)  # A's file order
    result = diff(ca, cb)
    assert all(k.mismatched == k.numel for k in result.keys if k.numel and k.name != "nan")


class _Doubling(ValueReader):
    """A stand-in for a format whose values are not its bytes (a dequantizing reader): no byte spans,
    read_flat/array give twice the stored values, NaN read as 0."""

    def flat_span(self, info: Any, lo: int, hi: int) -> None:
        return None

    def read_flat(self, info: Any, lo: int, hi: int, slot: int | None = None) -> Any:
        return self.array(info).reshape(-1)[lo:hi]

    def array(self, info: Any) -> Any:
        return np.nan_to_num(super().array(info)) * 2


def test_every_value_pass_reads_through_the_format_handlers_values_hook(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.tensor([1.0, 2.0, 3.0]), "x": torch.tensor([float("nan"), 1.0])}, str(path))
    ck = load_checkpoint(str(path))
    handler = next(h for h in registry.REGISTRY if h.format == ck.format)

    @contextmanager
    def doubled(c: Checkpoint) -> Iterator[ValueReader]:
        r = _Doubling(c)
        try:
            yield r
        finally:
            r.close()

    monkeypatch.setattr(type(handler), "values", lambda self, c: doubled(c))
    got = stats_pass.stats_for(ck, list(ck.entries))
    assert got["w"].max == 6.0 and got["x"].nan == 0
    assert show(ck, "w").stats.max == 6.0
    other = tmp_path / "o.pt"  # another format: its handler reads the stored values
    torch.save({"w": torch.tensor([2.0, 4.0, 6.0]), "x": torch.tensor([0.0, 2.0])}, other)
    assert diff(ck, load_checkpoint(str(other))).exit_code == 0
    assert check([str(path)], {"no-nan": True}).exit_code == 0  # the hook's values hold no NaN
