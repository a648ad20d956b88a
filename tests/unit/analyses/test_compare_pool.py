"""diff on forked worker processes (compare_pool.py) gives the figures of the threaded path, and is
used only where it should be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from statecli.analyses import compare_pool
from statecli.analyses.diff import diff
from statecli.load import load_checkpoint


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    a = {"w": torch.randn(10_000), "h": torch.randn(3, 5_000).half(), "b": torch.randn(10)}
    b = {k: v + (torch.randn_like(v.float()) * 1e-3).to(v.dtype) for k, v in a.items()}
    b["w"][17] = float("nan")
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(a, pa)
    save_file(b, pb)
    return pa, pb


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="no fork")
def test_pool_figures_equal_the_threaded_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pa, pb = _pair(tmp_path)
    threaded = {k.name: k for k in diff(load_checkpoint(str(pa)), load_checkpoint(str(pb))).keys}
    used: list[int] = []

    def forced(total: int, files: set[str]) -> compare_pool.ChunkPool:
        used.append(total)
        return compare_pool.ChunkPool()

    monkeypatch.setattr(compare_pool, "pool_for", forced)
    monkeypatch.setattr(compare_pool, "SPAN", 1024)  # many pieces, two shares
    pooled = {k.name: k for k in diff(load_checkpoint(str(pa)), load_checkpoint(str(pb))).keys}
    assert used, "the pool path was not taken"
    for name, t in threaded.items():
        p = pooled[name]
        assert (p.mismatched, p.max_abs, p.max_rel, p.note) == (t.mismatched, t.max_abs, t.max_rel, t.note), name
        if t.sums is not None:
            for f in ("aa", "bb", "ab", "dd"):  # other float32 rows (SPAN 1024 here): ~1e-8
                assert getattr(p.sums, f) == pytest.approx(getattr(t.sums, f), rel=1e-7)


def test_pool_only_for_big_cached_pairs(tmp_path: Path) -> None:
    pa, _ = _pair(tmp_path)
    pa.read_bytes()  # in the page cache now
    assert compare_pool._cached(str(pa)) or not hasattr(os, "RWF_NOWAIT")
    assert compare_pool.pool_for(compare_pool.MIN_BYTES - 1, {str(pa)}) is None  # small: threads
    assert compare_pool.pool_for(compare_pool.MIN_BYTES, {str(tmp_path / "missing")}) is None
    assert not compare_pool._cached(str(tmp_path / "missing"))


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/status"), reason="Linux only")
def test_a_worker_ends_with_its_parent_and_leaves_ctrl_c_to_it(tmp_path: Path) -> None:
    """A middle process forks a "worker" that runs the pool's initializer and sleeps, reports the worker's
    pid and SIGINT disposition, then is SIGKILLed: the worker must be gone soon after."""
    import signal
    import time

    report = tmp_path / "worker"
    middle = os.fork()
    if middle == 0:  # the parent a real pool's workers would have
        worker = os.fork()
        if worker == 0:
            compare_pool._worker_init(os.getppid())
            report.write_text(f"{os.getpid()} {signal.getsignal(signal.SIGINT) == signal.SIG_IGN}")
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
        os._exit(0)
    for _ in range(200):
        if report.exists() and report.read_text():
            break
        time.sleep(0.05)
    pid, ignores_int = report.read_text().split()
    assert ignores_int == "True"
    os.kill(middle, signal.SIGKILL)
    os.waitpid(middle, 0)
    for _ in range(100):  # reparented to init, so only /proc tells; a zombie counts as gone
        status = Path(f"/proc/{pid}/status")
        if not status.exists() or "zombie" in status.read_text():
            break
        time.sleep(0.05)
    else:
        os.kill(int(pid), signal.SIGKILL)
        raise AssertionError("the worker outlived its parent")
