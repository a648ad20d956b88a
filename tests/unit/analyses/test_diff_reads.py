"""diff's value pass compares the files' mapped pages (no copy into buffers), and tells identical pieces
from differing ones by their bytes wherever the difference lies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from statecli.analyses import compare_pool
from statecli.analyses.diff import diff
from statecli.io import values
from statecli.io.values import same_bytes
from statecli.load import load_checkpoint


def test_diff_reads_no_value_into_a_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    a = {"w": torch.randn(70_000), "same": torch.randn(3000), "h": torch.randn(300).half()}
    b = {"w": a["w"] + 1e-3, "same": a["same"].clone(), "h": a["h"]}
    pa, pb = tmp_path / "a.pt", tmp_path / "b.safetensors"
    torch.save(a, pa)
    save_file(b, str(pb))

    def no_copy(*args: object, **kwargs: object) -> None:
        raise AssertionError("a value was copied into a buffer")

    monkeypatch.setattr(values, "pread_array", no_copy)
    monkeypatch.setattr(compare_pool, "pool_for", lambda total, files: None)
    keys = {k.name: k for k in diff(load_checkpoint(str(pa)), load_checkpoint(str(pb))).keys}
    assert keys["w"].mismatched == 70_000 and keys["w"].max_abs == pytest.approx(1e-3, rel=1e-3)
    assert keys["same"].mismatched == 0 and keys["same"].max_abs == 0
    assert keys["h"].mismatched == 0


@pytest.mark.parametrize("n", [1, 7, 70_001, 200_000])
@pytest.mark.parametrize("where", ["first", "last", "none"])
def test_same_bytes_of_mapped_arrays(tmp_path: Path, n: int, where: str) -> None:
    x = np.arange(n, dtype=np.uint8)
    y = x.copy()
    if where != "none":
        y[0 if where == "first" else -1] ^= 1
    path = tmp_path / "v.bin"
    path.write_bytes(x.tobytes() + y.tobytes())
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    a, b = np.asarray(mapped[:n]), np.asarray(mapped[n:])  # neither owns a bytearray: no memcmp shortcut
    assert same_bytes(a, b) is (where == "none")
    assert same_bytes(a.view(np.int8), b.view(np.int8)) is (where == "none")
