"""DCP's `.metadata` trust is by exact name (issue 19): walking every public name of pathlib, genericpath
and torch.distributed.checkpoint (with its submodules), only DCP's metadata dataclasses and pathlib's path
classes are trusted; re-exports (os, sys, pickle, attrgetter, torch_save_to_dcp...) are not."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import pathlib
import pkgutil
from types import ModuleType

import pytest

from statecli.pickle.verdict import DCP_TRUSTED, verdict
from statecli.state import Verdict

# What `.metadata` may name and be read as plain data: the spec, written out, not read from the code.
INTENDED = {
    "torch.distributed.checkpoint.metadata.Metadata", "torch.distributed.checkpoint.metadata.TensorStorageMetadata",
    "torch.distributed.checkpoint.metadata.BytesStorageMetadata",
    "torch.distributed.checkpoint.metadata.ChunkStorageMetadata",
    "torch.distributed.checkpoint.metadata.TensorProperties", "torch.distributed.checkpoint.metadata.MetadataIndex",
    "torch.distributed.checkpoint.metadata.StorageMeta", "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING",
    "torch.distributed.checkpoint.filesystem._StorageInfo",
    "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
}


def _modules() -> list[ModuleType]:
    import genericpath

    import torch.distributed.checkpoint as dcp

    mods: list[ModuleType] = [pathlib, genericpath, dcp]
    for info in pkgutil.walk_packages(dcp.__path__, dcp.__name__ + "."):
        try:
            mods.append(importlib.import_module(info.name))
        except Exception:  # noqa: BLE001 - optional backends (fsspec, safetensors extras) may not import
            continue
    return mods


def test_only_the_intended_names_are_trusted() -> None:
    trusted: set[str] = set()
    seen = 0
    for mod in _modules():
        for name in dir(mod):
            seen += 1
            # what DCP's trust adds to the one verdict (names safe everywhere are that verdict's business)
            if verdict(mod.__name__, name, DCP_TRUSTED) is not verdict(mod.__name__, name):
                trusted.add(f"{mod.__name__}.{name}")
    assert seen > 1000  # the walk really went through the package
    assert trusted <= INTENDED, sorted(trusted - INTENDED)
    for bad in ("pathlib.os", "pathlib.sys", "pathlib.attrgetter", "genericpath.os",
                "torch.distributed.checkpoint.format_utils.torch_save_to_dcp", "torch.distributed.checkpoint.os",
                "torch.distributed.checkpoint.filesystem.pickle", "torch.distributed.checkpoint.state_dict_loader.load"):
        assert verdict(*bad.rsplit(".", 1), DCP_TRUSTED) is not Verdict.SAFE, bad


def test_every_trusted_name_is_a_data_class_torch_writes() -> None:
    """No typo and nothing callable beyond a dataclass, an Enum or a path class."""
    for full in DCP_TRUSTED:
        module, name = full.rsplit(".", 1)
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            assert module == "pathlib._local", full  # the 3.13+ spelling of pathlib's classes
            continue
        assert dataclasses.is_dataclass(obj) or (isinstance(obj, type) and issubclass(obj, (enum.Enum, pathlib.PurePath))), full
    assert INTENDED <= DCP_TRUSTED


@pytest.mark.parametrize("kind", ["plain", "optimizer", "nested", "bytes"])
def test_real_saves_name_only_trusted_or_allowlisted_globals(tmp_path: pytest.TempPathFactory, kind: str) -> None:
    """Single-process saves of several kinds: every global their .metadata names is safe under DCP's trust."""
    import io
    import pickle

    import torch
    import torch.distributed.checkpoint as dcp

    sd: dict[str, object] = {"w": torch.ones(2, 3)}
    if kind == "optimizer":
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.Adam(model.parameters())
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        sd = {"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3}
    elif kind == "nested":
        sd = {"a": {"b": [torch.zeros(2), {"c": torch.ones(1, dtype=torch.int64)}], "d": (1, 2.5, "x")}}
    elif kind == "bytes":
        sd = {"w": torch.ones(1), "names": ["x", "y"], "cfg": {"lr": 0.1, "betas": (0.9, 0.99)}, "flag": True}
    out = tmp_path / "ck"  # type: ignore[operator]
    dcp.save(sd, checkpoint_id=str(out), no_dist=True)  # type: ignore[call-arg]
    names: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            names.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recorder(io.BytesIO((out / ".metadata").read_bytes())).load()  # this test's own benign save
    for full in names:
        assert verdict(*full.rsplit(".", 1), DCP_TRUSTED) is Verdict.SAFE, full
