"""A Checkpoint is immutable all through: its collections cannot be changed in place, a list a caller
passed in and keeps cannot change it later, and a loaded checkpoint holds no mutable collection."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from statecli.load import load_checkpoint
from statecli.state import Checkpoint, Container, Entry, ModuleNode, Role
from statecli.vocab import Format

COLLECTIONS = ("entries", "containers", "files", "unsafe_globals", "messages", "modules")


def test_no_collection_of_a_checkpoint_can_be_changed() -> None:
    entries = [Entry("w")]
    files = ["a.pt"]
    meta = {"format": "pt"}
    ck = Checkpoint(path="a.pt", format=Format.TORCH_ZIP, entries=entries, container="",  # type: ignore[arg-type]
                    containers=[Container("(root)", Role.MODEL, 1, 0, 0)], files=files,  # type: ignore[arg-type]
                    metadata=meta, unsafe_globals=["os.system"], modules=[ModuleNode("fc", "Linear")])  # type: ignore[arg-type]
    entries.append(Entry("late"))  # the caller's own lists and dict change; the checkpoint does not
    files.append("b.pt")
    meta["format"] = "changed"
    assert [e.name for e in ck.entries] == ["w"] and ck.files == ("a.pt",) and ck.metadata["format"] == "pt"
    for name in COLLECTIONS:
        value = getattr(ck, name)
        assert isinstance(value, tuple), name
        with pytest.raises(AttributeError):
            value.append(None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(ck, name, ())
    with pytest.raises(TypeError):
        ck.metadata["format"] = "x"  # type: ignore[index]
    assert dataclasses.replace(ck, entries=[Entry("x")]).entries == (Entry("x"),)  # type: ignore[arg-type]


def test_a_loaded_checkpoint_holds_only_read_only_collections(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    path = tmp_path / "m.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    ck = load_checkpoint(str(path))
    assert ck.entries and ck.containers and ck.files
    for name in COLLECTIONS:
        assert isinstance(getattr(ck, name), tuple), name
    assert isinstance(ck.metadata, Mapping) and not isinstance(ck.metadata, dict)


def test_torch_metadata_cannot_be_changed(tmp_path: Path) -> None:
    """state_dict()._metadata (torch's per-module versions) is read-only inside the checkpoint, all the way
    down; torch's load_state_dict gets fresh plain copies."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    ck = load_checkpoint(str(path))
    meta = ck.torch_metadata
    assert meta is not None and meta["1"]["version"] == 2  # BatchNorm's _version
    with pytest.raises(TypeError):
        meta["1"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        meta["1"]["version"] = 1
    copy = ck.torch_metadata_dicts()
    assert copy is not None and isinstance(copy["1"], dict)
    copy["1"]["version"] = 1
    assert ck.torch_metadata["1"]["version"] == 2  # type: ignore[index]
    caller = {"": {"version": 1, "extra": [1, 2]}}
    built = Checkpoint(path="a.pt", format=Format.TORCH_ZIP, entries=(), container="", torch_metadata=caller)
    caller[""]["version"] = 9
    assert built.torch_metadata == {"": {"version": 1, "extra": (1, 2)}}  # a copy, lists as tuples
    assert Checkpoint(path="a.pt", format=Format.TORCH_ZIP, entries=(), container="",
                      torch_metadata=["not", "a", "mapping"]).torch_metadata is None  # type: ignore[arg-type]
