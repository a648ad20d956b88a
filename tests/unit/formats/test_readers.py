"""Every reader against torch's own weights_only loader: same keys, dtypes, shapes, devices, values."""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from statecli.io.values import value_reader
from statecli.load import load_checkpoint
from statecli.state import Kind
from tests.conftest import flatten_torch


def _generated_cases() -> dict[str, Any]:
    torch.manual_seed(0)
    base = torch.randn(6, 8)
    sd: dict[str, Any] = OrderedDict()
    sd["dense"] = torch.randn(3, 4)
    sd["view_row"] = base[2:4]
    sd["view_col"] = base[:, 1]
    sd["transposed"] = base.t()
    sd["base"] = base
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.empty(0, 4)
    sd["complex"] = torch.randn(3, dtype=torch.complex64)
    sd["fp8"] = torch.randn(5).to(torch.float8_e4m3fn)
    sd["fp8_e5m2"] = torch.randn(5).to(torch.float8_e5m2)
    sd["bf16"] = torch.randn(4).to(torch.bfloat16)
    sd["fp16"] = torch.randn(4).half()
    sd["int"] = torch.arange(7)
    sd["uint16"] = torch.arange(4).to(torch.uint16)
    sd["bool"] = torch.tensor([True, False, True])
    sd["meta"] = torch.empty(2, 3, device="meta")
    sd["expanded"] = torch.randn(1, 3).expand(4, 3)
    sd["number"] = 7
    sd["dtype"] = torch.float16
    sd["tuple"] = (1, "a", 2.5)
    sd["nested"] = {"inner": torch.ones(2), "list": [torch.zeros(1), torch.ones(2, dtype=torch.int8)]}
    return sd


def _special_cases() -> dict[str, Any]:
    q = torch.quantize_per_tensor(torch.rand(4), 0.1, 2, torch.qint8)
    qc = torch.quantize_per_channel(torch.rand(2, 3), torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.quint8)
    return {
        "q": q,
        "qc": qc,
        "sparse": torch.randn(4, 4).relu().to_sparse(),
        "csr": torch.eye(3).to_sparse_csr(),
    }


def _compare(path: Path, key: str | None = ".") -> None:
    ref = flatten_torch(torch.load(path, weights_only=True, map_location="cpu"))
    ck = load_checkpoint(str(path), key=key)
    got = {e.name: e.tensor for e in ck.entries if e.tensor is not None}
    assert set(got) == set(ref), f"keys differ: {set(got) ^ set(ref)}"
    with value_reader(ck) as reader:
        for name, t in ref.items():
            info = got[name]
            assert isinstance(t, torch.Tensor)
            assert info is not None
            assert info.dtype == str(t.dtype).removeprefix("torch."), name
            assert info.shape == tuple(t.shape), name
            if t.is_sparse or t.layout != torch.strided or t.is_quantized:
                continue
            if t.device.type == "meta":
                assert info.device == "meta"
                continue
            assert info.stride == tuple(t.stride()), name
            value = reader.tensor(info)
            if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
                assert torch.equal(value.view(torch.uint8), t.view(torch.uint8)), name
            else:
                assert torch.equal(value, t), name


@pytest.mark.parametrize("legacy", [False, True])
def test_generated_cases_match_torch(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "gen.pt"
    cases = _generated_cases()
    if legacy:  # torch's own legacy loader cannot read back dtypes newer than the format
        cases = {k: v for k, v in cases.items() if k not in ("fp8", "fp8_e5m2", "uint16")}
    torch.save(cases, path, _use_new_zipfile_serialization=not legacy)
    _compare(path)


def test_quantized_and_sparse_match_torch(tmp_path: Path) -> None:
    path = tmp_path / "special.pt"
    cases = _special_cases()
    torch.save(cases, path)
    _compare(path)
    ck = load_checkpoint(str(path))
    layouts = {e.name: e.tensor.layout for e in ck.entries if e.tensor is not None}
    assert layouts["q"] == "quantized" and layouts["sparse"] == "sparse_coo" and layouts["csr"] == "sparse_csr"
    sparse = next(e.tensor for e in ck.entries if e.name == "sparse")
    s = cases["sparse"]
    assert sparse is not None
    assert sparse.nbytes == s._values().nbytes + s._indices().nbytes


def test_shared_storage_is_visible(tmp_path: Path) -> None:
    path = tmp_path / "gen.pt"
    torch.save(_generated_cases(), path)
    ck = load_checkpoint(str(path))
    by = {e.name: e.tensor for e in ck.entries if e.tensor is not None}
    keys = {n: by[n].storage_key for n in ("base", "view_row", "view_col", "transposed")}  # type: ignore[union-attr]
    assert len(set(keys.values())) == 1
    assert by["view_row"].storage_offset == 16  # type: ignore[union-attr]


def test_state_dict_metadata_is_not_an_entry(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    sd = model.state_dict()
    assert hasattr(sd, "_metadata")
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    _compare(path)
    ck = load_checkpoint(str(path))
    assert [e.name for e in ck.entries] == list(sd.keys())
    kinds = {e.name: e.kind for e in ck.entries}
    assert kinds["1.running_mean"] == Kind.BUFFER and kinds["1.num_batches_tracked"] == Kind.BUFFER
    assert kinds["0.weight"] == Kind.PARAMETER
    assert all(e.evidence.inferred for e in ck.entries)


def test_safetensors_matches_library(tmp_path: Path) -> None:
    from safetensors import safe_open

    torch.manual_seed(1)
    tensors = {"a.weight": torch.randn(4, 3), "a.bias": torch.zeros(4, dtype=torch.bfloat16),
               "ids": torch.arange(5), "mask": torch.ones(2, 2, dtype=torch.bool), "empty": torch.empty(0),
               "f8": torch.randn(3).to(torch.float8_e5m2), "u16": torch.arange(3).to(torch.uint16)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    ck = load_checkpoint(str(path))
    assert ck.format == "safetensors"
    assert ck.metadata == {"format": "pt"}
    with safe_open(str(path), framework="pt") as f, value_reader(ck) as reader:
        assert {e.name for e in ck.entries} == set(f.keys())
        for e in ck.entries:
            ref = f.get_tensor(e.name)
            assert e.tensor is not None
            assert e.tensor.dtype == str(ref.dtype).removeprefix("torch.")
            assert e.tensor.shape == tuple(ref.shape)
            got = reader.tensor(e.tensor)
            assert torch.equal(got.view(torch.uint8) if ref.dtype == torch.float8_e5m2 else got,
                               ref.view(torch.uint8) if ref.dtype == torch.float8_e5m2 else ref)


def test_safetensors_header_only_is_read(tmp_path: Path) -> None:
    """The reader must not need the data bytes: a header whose data section is sparse-zero works and
    nothing after the header is opened (checked by the size check accepting a hole)."""
    path = tmp_path / "big.safetensors"
    header = json.dumps({"w": {"dtype": "F16", "shape": [1 << 20, 1024], "data_offsets": [0, 2 << 30]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + (2 << 30))  # a 2 GiB hole: reading it would take seconds
    ck = load_checkpoint(str(path))
    assert ck.entries[0].tensor is not None and ck.entries[0].tensor.nbytes == 2 << 30


def test_sharded_index_is_one_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(2)
    full = {f"layer.{i}.weight": torch.randn(3, 3) for i in range(4)}
    shards = {"model-00001-of-00002.safetensors": dict(list(full.items())[:2]),
              "model-00002-of-00002.safetensors": dict(list(full.items())[2:])}
    wmap = {}
    for fname, part in shards.items():
        save_file(part, str(tmp_path / fname))
        wmap.update({k: fname for k in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 144}, "weight_map": wmap}))
    ck = load_checkpoint(str(tmp_path))
    assert ck.format == "sharded safetensors"
    assert len(ck.files) == 3
    assert {e.name for e in ck.entries} == set(full)
    with value_reader(ck) as reader:
        for e in ck.entries:
            assert e.tensor is not None
            assert torch.equal(reader.tensor(e.tensor), full[e.name])


def test_sharded_bin_index(tmp_path: Path) -> None:
    full = {f"h.{i}.w": torch.full((2,), float(i)) for i in range(3)}
    torch.save({"h.0.w": full["h.0.w"]}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({k: full[k] for k in ("h.1.w", "h.2.w")}, tmp_path / "pytorch_model-00002-of-00002.bin")
    wmap = {"h.0.w": "pytorch_model-00001-of-00002.bin", "h.1.w": "pytorch_model-00002-of-00002.bin",
            "h.2.w": "pytorch_model-00002-of-00002.bin"}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": wmap}))
    ck = load_checkpoint(str(tmp_path / "pytorch_model.bin.index.json"))
    assert ck.format == "sharded torch"
    with value_reader(ck) as reader:
        for e in ck.entries:
            assert e.tensor is not None
            assert torch.equal(reader.tensor(e.tensor), full[e.name])


def test_dcp_directory(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    sd = {"enc.weight": torch.randn(3, 2), "enc.bias": torch.zeros(3, dtype=torch.float16), "step": 5}
    dcp.save(sd, checkpoint_id=str(tmp_path / "ck"))
    ck = load_checkpoint(str(tmp_path / "ck"))
    assert ck.format == "torch.distributed.checkpoint"
    assert ck.unsafe_globals == ()  # DCP's own metadata classes are data, not a weights_only concern
    tensors = {e.name: e.tensor for e in ck.entries if e.tensor is not None}
    assert set(tensors) == {"enc.weight", "enc.bias"}
    assert tensors["enc.bias"].dtype == "float16" and tensors["enc.weight"].shape == (3, 2)  # type: ignore[union-attr]
    with value_reader(ck) as reader:
        assert torch.equal(reader.tensor(tensors["enc.weight"]), sd["enc.weight"])  # type: ignore[arg-type]


def test_samples_match_torch(samples: Path) -> None:
    checked = 0
    for path in sorted(samples.rglob("*")):
        if path.suffix not in (".pt", ".bin", ".safetensors") or path.parent.name in ("dcp",):
            continue
        if path.suffix == ".safetensors":
            continue  # covered against the safetensors library above
        try:
            torch.load(path, weights_only=True, map_location="cpu")
        except Exception:  # noqa: BLE001 - files weights_only refuses (full-model pickles) are not comparable
            continue
        _compare(path)
        checked += 1
    assert checked >= 4


def test_training_checkpoint_container(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(1, 2)).sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
                "model_ema": model.state_dict()}, tmp_path / "ck.pt")
    ck = load_checkpoint(str(tmp_path / "ck.pt"))
    assert ck.container == "model"
    model_names = [e.name for e in ck.entries if e.group == ""]
    assert model_names == ["weight", "bias"]
    roles = {c.name: c.role for c in ck.containers}
    assert roles["optimizer"] == "optimizer" and roles["epoch"] == "metadata" and roles["model_ema"] == "ema"
    opt_kinds = {e.kind for e in ck.entries if e.group == "optimizer" and e.tensor is not None}
    assert opt_kinds == {"optimizer state"}
    ema = load_checkpoint(str(tmp_path / "ck.pt"), key="model_ema")
    assert ema.container == "model_ema"
    assert [e.name for e in ema.entries if e.group == ""] == ["weight", "bias"]


def test_lightning_and_prefix(tmp_path: Path) -> None:
    sd = {"module.net.weight": torch.zeros(2), "module.net.bias": torch.zeros(2)}
    torch.save({"state_dict": sd, "epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.4.0",
                "optimizer_states": [{"state": {}, "param_groups": []}]}, tmp_path / "l.ckpt")
    ck = load_checkpoint(str(tmp_path / "l.ckpt"))
    assert ck.container == "state_dict"
    assert any("--strip-prefix module." in n for n in ck.notes)
    stripped = load_checkpoint(str(tmp_path / "l.ckpt"), strip_prefix=("module.",))
    assert [e.name for e in stripped.entries if e.group == ""] == ["net.weight", "net.bias"]


def test_wrapper_with_a_stray_top_level_tensor(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), momentum=0.9)
    model(torch.randn(1, 2)).sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "best_loss": torch.tensor(0.25)},
               tmp_path / "ck.pt")
    ck = load_checkpoint(str(tmp_path / "ck.pt"))
    assert ck.container == "model"
    kinds = {e.name: e.kind for e in ck.entries}
    assert kinds["weight"] == Kind.PARAMETER and kinds["optimizer.state.0.momentum_buffer"] == "optimizer state"
    assert kinds["best_loss"] == "unknown"
