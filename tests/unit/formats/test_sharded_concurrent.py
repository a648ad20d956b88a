"""Local shards are read on the thread pool too, and read again in order when one fails (the same
error as sequential reading)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from statecli.errors import BadInput
from statecli.formats import read_raw, sharded


def _safetensors(path: Path, names: list[str]) -> None:
    header = {n: {"dtype": "F32", "shape": [2], "data_offsets": [8 * i, 8 * i + 8]} for i, n in enumerate(names)}
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + bytes(8 * len(names)))


def _folder(tmp_path: Path, shards: int = 3) -> Path:
    wmap = {}
    for s in range(shards):
        names = [f"layer.{s}.{i}.weight" for i in range(4)]
        _safetensors(tmp_path / f"model-{s + 1:05d}-of-{shards:05d}.safetensors", names)
        wmap |= {n: f"model-{s + 1:05d}-of-{shards:05d}.safetensors" for n in names}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    return tmp_path / "model.safetensors.index.json"


def test_local_shards_use_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = _folder(tmp_path)
    seen: list[list[str]] = []
    real = sharded.map_concurrent

    def spy(fn: Any, items: Any, *a: Any) -> Any:
        items = list(items)
        seen.append(items)
        return real(fn, items, *a)

    monkeypatch.setattr(sharded, "map_concurrent", spy)
    raw = read_raw(str(index))
    assert seen == [[f"model-{s:05d}-of-00003.safetensors" for s in (1, 2, 3)]]
    assert list(raw.root) == [f"layer.{s}.{i}.weight" for s in range(3) for i in range(4)]
    assert raw.files[1:] == [str(tmp_path / f"model-{s:05d}-of-00003.safetensors") for s in (1, 2, 3)]


def test_failed_shard_reports_as_in_order(tmp_path: Path) -> None:
    index = _folder(tmp_path)
    (tmp_path / "model-00002-of-00003.safetensors").write_bytes(b"\x00" * 4)
    (tmp_path / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(BadInput) as info:
        read_raw(str(index))
    assert "model-00002-of-00003.safetensors" in str(info.value.path or "") + info.value.problem
