"""check --no-nan/--no-inf's single scan (stats_pass.non_finite over io/blocks): exact NaN/Inf counts per
tensor whatever the dtype and wherever the blocks cut, a sum that overflows is no Inf, and the blocks
are the file's mapped pages rather than a copy."""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from statecli.analyses import stats_pass
from statecli.cli import app
from statecli.io import blocks
from statecli.io.values import value_reader
from statecli.load import load_checkpoint

NAN, INF = float("nan"), float("inf")


def _special(dtype: torch.dtype, n: int, at: dict[int, float]) -> torch.Tensor:
    t = torch.linspace(-3, 3, n).to(dtype)
    for i, v in at.items():
        t[i] = v
    return t


def _tensors() -> dict[str, torch.Tensor]:
    big16 = torch.finfo(torch.float16).max
    bigbf = torch.finfo(torch.bfloat16).max
    out = {
        "a.f32": _special(torch.float32, 5000, {0: NAN, 1023: INF, 1024: -INF, 4999: NAN}),
        "b.f16": _special(torch.float16, 3001, {7: NAN, 2048: -INF, 3000: big16, 5: -big16}),
        "c.bf16": _special(torch.bfloat16, 4097, {4096: INF, 0: bigbf, 2: -bigbf, 100: NAN}),
        "d.f64": _special(torch.float64, 700, {699: -INF}),
        "e.clean": torch.randn(3000),
        "f.int": torch.arange(100, dtype=torch.int32),
    }
    # negative NaNs (sign bit set): 0xFE00 as float16, 0xFFC0 as bfloat16
    out["b.f16"].view(torch.int16)[9] = -512
    out["c.bf16"].view(torch.int16)[11] = -64
    return out


def test_counts_nan_and_inf_of_every_float_dtype_in_blocks_that_span_tensors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.safetensors"
    tensors = _tensors()
    save_file(tensors, str(path))
    monkeypatch.setattr(blocks, "BLOCK", 3000)  # odd-sized blocks: tensors split and batched across reads
    ck = load_checkpoint(str(path))
    entries = [e for e in ck.entries if e.tensor is not None and e.name != "f.int"]
    infos: list[Any] = [e.tensor for e in entries]
    names = [e.name for e in entries]
    with value_reader(ck) as reader:
        plan, _ = blocks.plan(reader, infos, block=3000)
        assert any(len(b.pieces) > 1 for b in plan) and len(plan) > len(infos)
        got = dict(zip(names, stats_pass.non_finite(reader, infos, names)))
    for name in names:
        t = tensors[name].double() if tensors[name].dtype != torch.float64 else tensors[name]
        assert got[name] == (int(torch.isnan(t).sum()), int(torch.isinf(t).sum())), name
    assert got["b.f16"] == (2, 1) and got["c.bf16"] == (2, 1) and got["e.clean"] == (0, 0)


def _check(path: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["check", str(path), "--no-nan", "--no-inf", "--format", "json"])
    data = json.loads(result.output)
    return {f["rule"]: f for f in data["findings"]}


def test_check_reports_each_tensors_counts(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file(_tensors(), str(path))
    rules = _check(path)
    assert not rules["no-nan"]["passed"] and not rules["no-inf"]["passed"]
    assert "a.f32: 2 NaN" in rules["no-nan"]["reason"] and "c.bf16: 2 NaN" in rules["no-nan"]["reason"]
    assert "b.f16: 1 Inf" in rules["no-inf"]["reason"] and "d.f64: 1 Inf" in rules["no-inf"]["reason"]


def test_a_sum_that_overflows_is_not_an_inf(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    huge = torch.full((4096,), 3e38)  # finite, but any float32 sum of two of them is inf
    save_file({"huge": huge, "mixed": torch.cat([huge, -huge, huge])}, str(path))
    ck = load_checkpoint(str(path))
    with value_reader(ck) as reader:
        infos: list[Any] = [e.tensor for e in ck.entries]
        assert stats_pass.non_finite(reader, infos, [e.name for e in ck.entries]) == [(0, 0), (0, 0)]
    rules = _check(path)
    assert rules["no-nan"]["passed"] and rules["no-inf"]["passed"]


def test_blocks_are_the_files_pages_unmapped_after_use(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(100_000), "v": torch.randn(10)}, str(path))
    ck = load_checkpoint(str(path))
    seen: list[Any] = []

    def fn(b: blocks.Block, data: memoryview) -> int:
        seen.append(data.obj)
        return bytes(data[:8]) == path.read_bytes()[b.start:b.start + 8]

    with value_reader(ck) as reader:
        infos: list[Any] = [e.tensor for e in ck.entries]
        plan, _ = blocks.plan(reader, infos, block=64 << 10)
        assert all(blocks.run(reader, plan, fn))
    assert seen and all(isinstance(m, mmap.mmap) and m.closed for m in seen)  # no copy; RSS stays a few blocks


def test_a_block_past_the_end_of_the_file_is_one_error_not_a_crash(tmp_path: Path) -> None:
    import os

    from statecli.errors import BadInput

    path = tmp_path / "short.bin"
    path.write_bytes(bytes(100))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(BadInput, match="short read"), blocks.mapped(fd, str(path), 50, 100):
            pass  # mapping it would have read past the end (SIGBUS): it is read, and the read is short
        with blocks.mapped(fd, str(path), 10, 20) as view:
            assert bytes(view) == bytes(20)
    finally:
        os.close(fd)
