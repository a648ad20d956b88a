"""ValueReader's first reads of a file from several workers at once: one descriptor, the size known
before anyone can use it (a worker once read the size map between another's open and fstat)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from statecli.io.values import ValueReader
from statecli.load import load_checkpoint


def _first_reads(reader: ValueReader, info: object, workers: int = 8) -> list[object]:
    start = threading.Barrier(workers)
    out: list[object] = []

    def work(lo: int) -> None:
        start.wait()
        try:
            out.append(reader.read_flat(info, lo, lo + 512))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the failure is the result
            out.append(exc)

    threads = [threading.Thread(target=work, args=(i * 512,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_first_reads(tmp_path: Path) -> None:
    p = tmp_path / "a.safetensors"
    save_file({"w": torch.arange(4096, dtype=torch.float32)}, p)
    ck = load_checkpoint(str(p))
    info = ck.entries[0].tensor
    assert info is not None
    for _ in range(50):
        reader = ValueReader(ck)
        out = _first_reads(reader, info)
        assert all(isinstance(a, np.ndarray) for a in out), out
        assert len(reader._fds) == 1
        reader.close()
