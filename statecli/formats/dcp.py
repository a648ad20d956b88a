"""torch.distributed.checkpoint directories: the `.metadata` pickle (read by statecli's own
no-execution unpickler, since torch reads it with plain pickle.load) names every tensor and chunk."""

from __future__ import annotations

import os
from typing import Any

from ..errors import BadInput
from ..state import TensorInfo
from ._common import RawCheckpoint, open_regular
from .source import isfile
from .unpickler import DCP_TRUSTED_PREFIXES, DtypeValue, NamedValue, StubObject, unpickle

FORMAT = "torch.distributed.checkpoint"
MAX_METADATA = 1 << 30
_TRUSTED = DCP_TRUSTED_PREFIXES + ("pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath")


def _no_pid(pid: Any) -> Any:
    raise BadInput(None, "unexpected persistent id in a DCP .metadata pickle")


def _attr(obj: Any, name: str, path: str) -> Any:
    if not isinstance(obj, StubObject):
        raise BadInput(path, f"malformed .metadata: expected an object holding {name!r}, got {type(obj).__name__}")
    return obj.attrs().get(name)


def _properties(props: Any, path: str) -> tuple[Any, Any, Any]:
    """TensorProperties pickles its fields as a tuple (dtype, layout, requires_grad, ...)."""
    if isinstance(props, StubObject) and isinstance(props.state, tuple) and len(props.state) >= 3:
        return props.state[0], props.state[1], props.state[2]
    return _attr(props, "dtype", path), _attr(props, "layout", path), _attr(props, "requires_grad", path)


def read(folder: str) -> RawCheckpoint:
    meta_path = os.path.join(folder, ".metadata")
    with open_regular(meta_path) as f:
        data = f.read(MAX_METADATA + 1)
    if len(data) > MAX_METADATA:
        raise BadInput(meta_path, "DCP .metadata is larger than 1 GiB")
    root, up = unpickle(data, _no_pid, meta_path, "DCP .metadata pickle", trusted_prefixes=_TRUSTED)
    if not (isinstance(root, StubObject) and root.class_name.endswith("checkpoint.metadata.Metadata")):
        raise BadInput(meta_path, "not a torch.distributed.checkpoint Metadata pickle")
    sd_meta = _attr(root, "state_dict_metadata", meta_path)
    storage = _attr(root, "storage_data", meta_path) or {}
    if not isinstance(sd_meta, dict) or not isinstance(storage, dict):
        raise BadInput(meta_path, "malformed .metadata: state_dict_metadata/storage_data are not mappings")
    files_of: dict[str, list[tuple[str, int, int]]] = {}
    for idx, info in storage.items():
        fqn = _attr(idx, "fqn", meta_path)
        rel = _attr(info, "relative_path", meta_path)
        off, length = _attr(info, "offset", meta_path), _attr(info, "length", meta_path)
        if not isinstance(rel, str) or os.path.isabs(rel) or ".." in rel.split("/") or "/" in rel:
            raise BadInput(meta_path, f"storage record names file {rel!r} outside the checkpoint folder")
        files_of.setdefault(str(fqn), []).append((rel, off if isinstance(off, int) else 0,
                                                  length if isinstance(length, int) else 0))
    out: dict[str, Any] = {}
    for fqn, item in sd_meta.items():
        cls = item.class_name if isinstance(item, StubObject) else ""
        places = files_of.get(str(fqn), [])
        source = os.path.join(folder, places[0][0]) if places else None
        if cls.endswith("TensorStorageMetadata"):
            dtype, layout, requires_grad = _properties(_attr(item, "properties", meta_path), meta_path)
            size = _attr(item, "size", meta_path)
            if not isinstance(dtype, DtypeValue) or not isinstance(size, tuple):
                raise BadInput(meta_path, f"malformed .metadata record for {fqn!r}")
            out[str(fqn)] = TensorInfo(
                dtype=dtype.name, shape=tuple(size), device="cpu",
                layout=layout.qualname.removeprefix("torch.") if isinstance(layout, NamedValue) else "strided",
                storage_key=str(fqn), source=source, data_offset=None,
                storage_nbytes=None, requires_grad=requires_grad is True,
            )
        else:
            out[str(fqn)] = _BytesItem(str(fqn), sum(p[2] for p in places))
    files = [meta_path] + sorted({os.path.join(folder, p[0]) for ps in files_of.values() for p in ps})
    for fpath in files[1:]:
        if not isfile(fpath):
            raise BadInput(folder, f"DCP data file {os.path.basename(fpath)!r} named in .metadata is missing")
    version = _attr(root, "version", meta_path)
    raw = RawCheckpoint(path=folder, format=FORMAT, root=out, files=files,
                        metadata={"dcp_version": str(version)} if version else {},
                        globals_seen=up.globals_seen, untrusted=up.untrusted, dangerous=up.dangerous)
    _read_small_values(raw, folder, out, files_of)
    planner = _attr(root, "planner_data", meta_path)
    raw.root = _nest(out, planner if isinstance(planner, dict) else {}, meta_path)
    return raw


# DCP keeps each non-tensor value (epoch, param_groups' lr...) as a small torch.save blob. Read the small
# ones (never tensor data) with the same no-execution unpickler, so a training checkpoint keeps them.
MAX_VALUE_BYTES = 1 << 16
MAX_VALUES_TOTAL = 16 << 20


def _read_small_values(raw: RawCheckpoint, folder: str, out: dict[str, Any],
                       files_of: dict[str, list[tuple[str, int, int]]]) -> None:
    from ._common import read_exact

    budget = MAX_VALUES_TOTAL
    handles: dict[str, Any] = {}
    try:
        for fqn, item in out.items():
            places = files_of.get(fqn, [])
            if not isinstance(item, _BytesItem) or len(places) != 1 or not 0 < places[0][2] <= MAX_VALUE_BYTES:
                continue
            rel, off, length = places[0]
            budget -= length
            if budget < 0:
                break
            path = os.path.join(folder, rel)
            if path not in handles:
                handles[path] = open_regular(path)
            blob = read_exact(handles[path], off, length, path, f"DCP value {fqn!r}")
            value = _value_from_blob(raw, blob, path, fqn)
            if value is not _UNREAD:
                out[fqn] = value
    finally:
        for h in handles.values():
            h.close()


_UNREAD = object()


def _value_from_blob(raw: RawCheckpoint, blob: bytes, path: str, fqn: str) -> Any:
    """A torch.save'd plain value (zip with data.pkl and no storages); anything else stays unread."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            names = zf.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl")]
            if len(pkl) != 1 or any("/data/" in n for n in names):
                return _UNREAD  # a tensor or an unexpected layout: not a plain value
            data = zf.read(pkl[0])
    except (zipfile.BadZipFile, KeyError, OSError, ValueError):
        return _UNREAD
    value, up = unpickle(data, _no_pid, path, f"DCP value {fqn!r}")
    raw.untrusted.extend(g for g in up.untrusted if g not in raw.untrusted)
    raw.dangerous.extend(g for g in up.dangerous if g not in raw.dangerous)
    return value


def _nest(flat: dict[str, Any], planner: dict[Any, Any], meta_path: str) -> dict[str, Any]:
    """The state dict as it was saved: DCP flattens {"model": {...}, "optimizer": {...}, "epoch": 5}
    to dotted keys and records each key's path (planner_data); rebuild the nesting from those paths,
    so containers (model, optimizer, epoch) are found as in a torch.save checkpoint."""
    root: dict[Any, Any] = {}
    for fqn, value in flat.items():
        path = planner.get(fqn)
        if not isinstance(path, tuple) or not path or not all(isinstance(p, (str, int)) for p in path):
            path = (fqn,)
        node: Any = root
        for i, part in enumerate(path[:-1]):
            child: Any = [] if isinstance(path[i + 1], int) else {}
            if isinstance(node, dict):
                node = node.setdefault(part, child)
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < 1 << 20:
                while len(node) <= part:
                    node.append(None)
                if node[part] is None:
                    node[part] = child
                node = node[part]
            else:
                return flat  # inconsistent paths: keep the flat view rather than guess
        last = path[-1]
        if isinstance(node, list) and isinstance(last, int) and 0 <= last < 1 << 20:
            while len(node) <= last:
                node.append(None)
            node[last] = value
        elif isinstance(node, list):
            return flat
        else:
            node[last] = value
    return root


class _BytesItem:
    """A non-tensor value DCP stored as a torch.save'd blob; its value is not read for metadata."""

    def __init__(self, fqn: str, length: int) -> None:
        self.fqn = fqn
        self.length = length

    def __repr__(self) -> str:
        return f"<object saved by DCP, {self.length} bytes>"


# -- write side (driven by statecli.rewrite) -------------------------------------------------------

def write(folder: str, state_dict: dict[str, Any]) -> None:
    """Save a state dict of torch tensors and plain values with torch's own FileSystemWriter (imports torch)."""
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... single process": as intended
        dcp.save(state_dict, storage_writer=dcp.FileSystemWriter(folder), no_dist=True)  # type: ignore[call-arg]
