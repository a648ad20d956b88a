"""The formats' encoders, driven directly: what each writes, torch (or the safetensors library) reads
back identically. torch is the oracle throughout."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from statecli.formats import dcp, safetensors, sharded, torchzip
from statecli.formats.safetensors import WriteItem
from statecli.formats.torchzip import OutStorage, OutTensor
from statecli.load import load_checkpoint


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def test_pt_writer_round_trips_through_torch_load(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32)
    bf = torch.randn(4).bfloat16()
    f8 = torch.tensor([0.5, -2.0, 448.0]).to(torch.float8_e4m3fn)  # no typed storage class: UntypedStorage
    data = {"0": base, "1": bf, "2": f8, "3": torch.tensor([True, False])}
    storages = [OutStorage("0", "float32", "cpu", 12), OutStorage("1", "bfloat16", "cpu", 4),
                OutStorage("2", "float8_e4m3fn", "cpu", 3), OutStorage("3", "bool", "cuda:0", 2)]
    s0, s1, s2, s3 = storages
    tree: Any = OrderedDict([
        ("m", OutTensor(s0, 0, (3, 4), (4, 1))),
        ("row", OutTensor(s0, 4, (4,), (1,))),
        ("t", OutTensor(s0, 0, (4, 3), (1, 4), requires_grad=True)),
        ("nested", {"bf": OutTensor(s1, 0, (2, 2), (2, 1)), "list": [OutTensor(s2, 0, (3,), (1,)), 7]}),
        ("mask", OutTensor(s3, 0, (2,), (1,))),
        ("epoch", 3), ("name", "x"),
    ])
    path = tmp_path / "w.pt"
    with open(path, "wb") as f:
        torchzip.write(f, tree, storages, lambda st: [memoryview(_bytes(data[st.key]))])
    got = torch.load(path, weights_only=True, map_location="cpu")
    m = base.reshape(3, 4)
    assert torch.equal(got["m"], m) and torch.equal(got["row"], m[1]) and torch.equal(got["t"], m.t())
    assert got["t"].requires_grad and not got["m"].requires_grad
    assert got["row"].untyped_storage().data_ptr() == got["m"].untyped_storage().data_ptr()  # one storage
    assert torch.equal(got["nested"]["bf"], bf.reshape(2, 2)) and got["nested"]["bf"].dtype == torch.bfloat16
    assert got["nested"]["list"][0].dtype == torch.float8_e4m3fn and got["nested"]["list"][1] == 7
    assert torch.equal(got["nested"]["list"][0].float(), f8.float())
    assert torch.equal(got["mask"], torch.tensor([True, False])) and got["epoch"] == 3 and got["name"] == "x"
    with pytest.raises(RuntimeError, match="CUDA"):  # the saved location is kept
        torch.load(path, weights_only=True)


def test_pt_writer_refuses_a_short_storage(tmp_path: Path) -> None:
    st = OutStorage("0", "float32", "cpu", 4)
    with open(tmp_path / "x.pt", "wb") as f, pytest.raises(RuntimeError, match="expected 16"):
        torchzip.write(f, {"w": OutTensor(st, 0, (4,), (1,))}, [st], lambda _: [b"\0" * 8])


def _items(tensors: dict[str, torch.Tensor]) -> list[WriteItem]:
    def item(name: str, t: torch.Tensor) -> WriteItem:
        return WriteItem(name, str(t.dtype).removeprefix("torch."), tuple(t.shape), t.numel() * t.element_size(),
                         lambda: iter([memoryview(_bytes(t))]))

    return [item(k, v) for k, v in tensors.items()]


def test_safetensors_writer_round_trips_through_load_file(tmp_path: Path) -> None:
    tensors = {"w": torch.randn(3, 5), "h": torch.randn(7).half(), "b": torch.randn(2, 2).bfloat16(),
               "i": torch.arange(5), "mask": torch.tensor([True, False, True]), "empty": torch.empty(0, 3),
               "t": torch.randn(4, 2).t()}  # non-contiguous input: written contiguous
    path = tmp_path / "x.safetensors"
    with open(path, "wb") as f:
        safetensors.write(f, _items(tensors), {"format": "pt", "k": "v"})
    got = load_file(str(path))
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "k": "v"}
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0  # padded as the safetensors library pads
    assert {e.name for e in load_checkpoint(str(path)).entries} == set(tensors)


def test_sharded_writer_and_index_read_back(tmp_path: Path) -> None:
    tensors = {f"layers.{i}.weight": torch.randn(16, 16) for i in range(5)}
    sizes = [v.numel() * 4 for v in tensors.values()]
    groups = sharded.split_by_size(sizes, 2 * 1024 + 100)
    assert groups == [[0, 1], [2, 3], [4]] and sharded.split_by_size([], 10) == [[]]
    assert sharded.split_by_size([50, 5], 10) == [[0], [1]]  # an item over the limit gets a shard alone
    stem, ext, index = sharded.shard_layout(safetensors=True)
    names, items = list(tensors), _items(tensors)
    wmap = {}
    for i, idxs in enumerate(groups, 1):
        fname = sharded.shard_name(stem, ext, i, len(groups))
        with open(tmp_path / fname, "wb") as f:
            safetensors.write(f, [items[j] for j in idxs], {"format": "pt"})
        wmap.update({names[j]: fname for j in idxs})
    sharded.write_index(str(tmp_path / index), wmap, sum(sizes))
    data = json.loads((tmp_path / index).read_text())
    assert data["metadata"]["total_size"] == sum(sizes) and data["weight_map"] == wmap
    merged: dict[str, torch.Tensor] = {}
    for fname in sorted(set(wmap.values())):
        merged.update(load_file(str(tmp_path / fname)))
    assert all(torch.equal(merged[k], v) for k, v in tensors.items())
    assert {e.name for e in load_checkpoint(str(tmp_path / index)).entries} == set(tensors)
    assert sharded.shard_layout(safetensors=False) == ("pytorch_model", "bin", "pytorch_model.bin.index.json")


def test_dcp_writer_round_trips_through_dcp_load(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as tdcp

    sd: dict[str, Any] = {"model": {"w": torch.randn(4, 3), "b": torch.randn(4).half()}, "step": torch.tensor(5)}
    dcp.write(str(tmp_path / "d"), sd)
    target: dict[str, Any] = {"model": {"w": torch.empty(4, 3), "b": torch.empty(4, dtype=torch.half)}, "step": torch.tensor(0)}
    tdcp.load(target, checkpoint_id=str(tmp_path / "d"), no_dist=True)
    assert torch.equal(target["model"]["w"], sd["model"]["w"]) and torch.equal(target["model"]["b"], sd["model"]["b"])
    assert int(target["step"]) == 5
    ck = load_checkpoint(str(tmp_path / "d"))
    assert ck.container == "model" and {"w", "b"} <= {e.name for e in ck.entries if e.group == ""}
