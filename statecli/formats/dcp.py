"""torch.distributed.checkpoint folders, read by statecli itself. torch's loader plain-pickle.loads
`.metadata` and torch.loads every non-tensor item without weights_only, so it is never used for reading:
`.metadata` goes through the no-execution unpickler (DCP's dataclasses trusted by exact name), and every
item it names in the `.distcp` files (each its own torch.save zip) through the same reader as a .pt."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput, StatecliError, UnsafeContent
from ..io.source import isfile, register_range
from ..pickle.pickles import Context, Findings, scan_stream
from ..pickle.unpickler import DtypeValue, NamedValue, RestrictedUnpickler, StubObject, TensorRef, unpickle
from ..pickle.verdict import DCP_TRUSTED
from ..state import Format, TensorInfo, TensorPiece
from ._common import RawCheckpoint, open_regular
from .handler import BaseHandler, merge, record

METADATA = ".metadata"
MAX_METADATA = 1 << 30
_METADATA_CLS = "torch.distributed.checkpoint.metadata.Metadata"
_TENSOR_CLS = "torch.distributed.checkpoint.metadata.TensorStorageMetadata"


@dataclass(frozen=True)
class Item:
    """One record of `.metadata`'s storage_data: a tensor piece (`offsets` set) or a bytes value, stored
    as `length` bytes at `offset` of `file`. `path` opens those bytes as a file of their own."""

    fqn: str
    offsets: tuple[int, ...] | None
    file: str
    offset: int
    length: int
    transforms: tuple[str, ...]
    path: str

    @property
    def span(self) -> tuple[str, int, int]:
        return self.file, self.offset, self.length

    @property
    def name(self) -> str:
        """The item as findings list it: `__0_0.distcp[model.w @ (0, 0)]` (an fqn may hold '/')."""
        return self.path[len(os.path.dirname(self.file)):].lstrip("/\\")


@dataclass(frozen=True)
class Layout:
    """A DCP folder as `.metadata` describes it, read without running anything."""

    meta_path: str
    root: StubObject
    entries: dict[str, Any]  # fqn -> TensorStorageMetadata / BytesStorageMetadata stub
    items: tuple[Item, ...]
    reader: RestrictedUnpickler


def metadata_path(folder: str) -> str:
    """The folder's global `.metadata`. A folder with only per-rank `__N.metadata` files (saved without
    rank coordination) has no one description of the checkpoint: refused, naming them."""
    path = os.path.join(folder, METADATA)
    if isfile(path) or not os.path.isdir(folder):
        return path
    ranks = sorted(n for n in os.listdir(folder) if n.startswith("__") and n.endswith(METADATA))
    if ranks:
        raise BadInput(folder, f"DCP folder has per-rank metadata ({', '.join(ranks[:3])}) but no global "
                               ".metadata (saved without rank coordination); statecli reads a folder with one "
                               ".metadata")
    return path


def _no_pid(pid: Any) -> Any:
    raise BadInput(None, "unexpected persistent id in a DCP .metadata pickle")


def _attr(obj: Any, name: str, path: str) -> Any:
    if not isinstance(obj, StubObject):
        raise BadInput(path, f"malformed .metadata: expected an object holding {name!r}, got {type(obj).__name__}")
    return obj.attrs().get(name)


def _int(value: Any, what: str, path: str) -> int:
    if type(value) is not int or value < 0:
        raise BadInput(path, f"malformed .metadata: {what} is {value!r:.40}, not a byte count")
    return value


def _sizes(value: Any, what: str, path: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int and v >= 0 for v in value):
        raise BadInput(path, f"malformed .metadata: {what} is {value!r:.60}, not a torch.Size")
    return value


def layout(folder: str) -> Layout:
    """`.metadata` through the no-execution unpickler and every storage record it holds, checked to lie
    inside the folder. Reads no `.distcp` byte."""
    meta_path = metadata_path(folder)
    with open_regular(meta_path) as f:
        data = f.read(MAX_METADATA + 1)
    if len(data) > MAX_METADATA:
        raise BadInput(meta_path, "DCP .metadata is larger than 1 GiB")
    root, up = unpickle(data, _no_pid, meta_path, "DCP .metadata pickle", trusted=DCP_TRUSTED)
    if not (isinstance(root, StubObject) and root.class_name == _METADATA_CLS):
        raise BadInput(meta_path, "not a torch.distributed.checkpoint Metadata pickle")
    entries = _attr(root, "state_dict_metadata", meta_path)
    storage = _attr(root, "storage_data", meta_path) or {}
    if not isinstance(entries, dict) or not isinstance(storage, dict):
        raise BadInput(meta_path, "malformed .metadata: state_dict_metadata/storage_data are not mappings")
    items = []
    for idx, info in storage.items():
        fqn = str(_attr(idx, "fqn", meta_path))
        offsets = _attr(idx, "offset", meta_path)
        rel = _attr(info, "relative_path", meta_path)
        if not isinstance(rel, str) or rel in ("", ".", "..") or "/" in rel or "\\" in rel or os.path.isabs(rel):
            raise BadInput(meta_path, f"storage record names file {rel!r:.80} outside the checkpoint folder")
        off = _int(_attr(info, "offset", meta_path), f"the offset of {fqn!r}", meta_path)
        length = _int(_attr(info, "length", meta_path), f"the length of {fqn!r}", meta_path)
        transforms = _attr(info, "transform_descriptors", meta_path) or ()
        if not isinstance(transforms, (list, tuple)) or not all(isinstance(t, str) for t in transforms):
            raise BadInput(meta_path, f"malformed .metadata: transform descriptors of {fqn!r}")
        file = os.path.join(folder, rel)
        where = f"{fqn}" if offsets is None else f"{fqn} @ {tuple(offsets) if isinstance(offsets, tuple) else offsets}"
        items.append(Item(fqn, None if offsets is None else _sizes(offsets, f"the offsets of {fqn!r}", meta_path),
                          file, off, length, tuple(transforms), register_range(file, off, length, where)))
    for fpath in sorted({i.file for i in items}):
        if not isfile(fpath):
            raise BadInput(folder, f"DCP data file {os.path.basename(fpath)!r} named in .metadata is missing")
    return Layout(meta_path, root, entries, tuple(items), up)


def refuse_transforms(item: Item) -> None:
    """Items written through DCP's stream extensions (e.g. zstd) are not decoded by statecli."""
    if item.transforms:
        raise BadInput(item.path, f"DCP item is stored through {', '.join(item.transforms)} (a DCP stream "
                                  "extension); statecli does not decode those items")


def read(folder: str) -> RawCheckpoint:
    lay = layout(folder)
    raw = RawCheckpoint(path=folder, format=Format.DCP, root={}, files=[lay.meta_path] + sorted({i.file for i in lay.items}),
                        globals_seen=lay.reader.globals_seen, untrusted=lay.reader.untrusted,
                        dangerous=lay.reader.dangerous)
    version = _attr(lay.root, "version", lay.meta_path)
    if version:
        raw.metadata["dcp_version"] = str(version)
    if raw.dangerous:
        return raw  # the loader refuses it on these names; its items are not worth reading
    by_fqn: dict[str, list[Item]] = {}
    for item in lay.items:
        by_fqn.setdefault(item.fqn, []).append(item)
    # Every item is a file torch.load would read (weights_only=False for non-tensors): each one is read
    # and judged here, whatever its size, before anything of the folder is used.
    # Records naming the same bytes are read once: work grows with the .distcp bytes, not the records.
    seen: dict[tuple[str, int, int], Any] = {}
    values = {}
    for item in lay.items:
        key = item.span
        if key not in seen:
            seen[key] = _read_item(item, raw)
        values[item] = seen[key]
    out: dict[str, Any] = {}
    for fqn, entry in lay.entries.items():
        fqn = str(fqn)
        items = by_fqn.get(fqn, [])
        if isinstance(entry, StubObject) and entry.class_name == _TENSOR_CLS:
            out[fqn] = _tensor(fqn, entry, items, values, lay.meta_path)
        elif len(items) == 1 and items[0].offsets is None:
            value = values[items[0]]
            out[fqn] = value if not isinstance(value, RawCheckpoint) else _BytesItem(fqn, items[0].length)
        else:
            raise BadInput(lay.meta_path, f"malformed .metadata: value {fqn!r} has {len(items)} storage records")
    planner = _attr(lay.root, "planner_data", lay.meta_path)
    raw.root = _nest(out, planner if isinstance(planner, dict) else {})
    return raw


def _read_item(item: Item, raw: RawCheckpoint) -> Any:
    """One item through the reader a standalone .pt gets (a payload refuses the folder; needs-trust
    names are added to the folder's); a tensor item's raw result, a plain value's value."""
    from . import read_raw

    refuse_transforms(item)
    sub = read_raw(item.path, allow_sharded=False)
    if sub.dangerous:
        raise UnsafeContent(item.path, "pickle references code that loading would run: " + ", ".join(sub.dangerous),
                            "refusing the folder; do not load it with torch.distributed.checkpoint")
    raw.globals_seen.extend(g for g in sub.globals_seen if g not in raw.globals_seen)
    raw.untrusted.extend(g for g in sub.untrusted if g not in raw.untrusted)
    raw.warnings.extend(w for w in sub.warnings if w not in raw.warnings)
    if item.offsets is not None or sub.storages:
        return sub  # a tensor (or a value holding tensors): its storages are located by the caller
    return sub.root


def _tensor(fqn: str, entry: StubObject, items: list[Item], values: dict[Item, Any], meta_path: str) -> TensorInfo:
    """A tensor from its pieces: each piece's own TensorInfo (in its .distcp, at its absolute offset),
    checked against the chunk it stands for; one piece covering the whole tensor is the tensor."""
    dtype, layout_, requires_grad = _properties(_attr(entry, "properties", meta_path), meta_path)
    size = _sizes(_attr(entry, "size", meta_path), f"the size of {fqn!r}", meta_path)
    if not isinstance(dtype, DtypeValue):
        raise BadInput(meta_path, f"malformed .metadata record for {fqn!r}")
    layout_name = layout_.qualname.removeprefix("torch.") if isinstance(layout_, NamedValue) else "strided"
    pieces: list[TensorPiece] = []
    for item in items:
        offsets = item.offsets
        if offsets is None or len(offsets) != len(size):
            raise BadInput(meta_path, f"malformed .metadata: a piece of {fqn!r} has offsets {offsets!r:.60}")
        info = _piece_info(item, values[item])
        if info.dtype != dtype.name or len(info.shape) != len(size) or any(
                o + s > n for o, s, n in zip(offsets, info.shape, size)):
            raise BadInput(item.path, f"the piece of {fqn!r} at {offsets} ({info.dtype} {list(info.shape)}) does not "
                                      f"fit the tensor ({dtype.name} {list(size)})")
        pieces.append(TensorPiece(offsets, info))
    if sum(p.info.numel for p in pieces) != math.prod(size):
        raise BadInput(meta_path, f"the pieces of {fqn!r} hold {sum(p.info.numel for p in pieces)} elements; the "
                                  f"tensor has {math.prod(size)}")
    if len(pieces) == 1:
        return dataclasses.replace(pieces[0].info, storage_key=fqn, requires_grad=requires_grad is True,
                                   layout=layout_name)
    return TensorInfo(dtype=dtype.name, shape=size, device="cpu", layout=layout_name, storage_key=fqn,
                      requires_grad=requires_grad is True, pieces=tuple(pieces))


def _piece_info(item: Item, sub: Any) -> TensorInfo:
    """A tensor item's one tensor, relocated from the item to its bytes in the .distcp file."""
    if not isinstance(sub, RawCheckpoint) or not isinstance(sub.root, TensorRef):
        raise BadInput(item.path, "a DCP tensor item that does not hold one tensor")
    info = sub.tensor_info(sub.root)
    if info.data_offset is None or info.source != item.path:
        raise BadInput(item.path, "a DCP tensor item whose tensor has no data in the item")
    if info.data_offset + info.storage_size > item.length:
        raise BadInput(item.path, "tensor data runs past the end of its DCP item")
    return dataclasses.replace(info, source=item.file, data_offset=item.offset + info.data_offset,
                               storage_key=f"{item.path}/{info.storage_key}", device="cpu")


def _properties(props: Any, path: str) -> tuple[Any, Any, Any]:
    """TensorProperties pickles its fields as a tuple (dtype, layout, requires_grad, ...)."""
    if isinstance(props, StubObject) and isinstance(props.state, tuple) and len(props.state) >= 3:
        return props.state[0], props.state[1], props.state[2]
    return _attr(props, "dtype", path), _attr(props, "layout", path), _attr(props, "requires_grad", path)


def _nest(flat: dict[str, Any], planner: dict[Any, Any]) -> dict[str, Any]:
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
    """A non-tensor value DCP stored as a torch.save'd blob holding tensors of its own: judged, not shown."""

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
        dcp.save(state_dict, storage_writer=dcp.FileSystemWriter(folder), no_dist=True)  # type: ignore[attr-defined]  # torch re-exports these without __all__


def scan(folder: str, acc: Findings) -> None:
    """`.metadata` (DCP's dataclasses trusted by exact name), then every item it names in the `.distcp`
    files, each scanned as the standalone file torch.load would read (any size, any format)."""
    from . import scan_file

    with open_regular(metadata_path(folder)) as f:
        scan_stream(f, ".metadata", acc, Context(DCP_TRUSTED))
    done: set[tuple[str, int, int]] = set()
    for item in layout(folder).items:
        if item.span in done:  # records naming the same bytes: scanned once
            continue
        done.add(item.span)
        sub = Findings()
        try:
            refuse_transforms(item)
            scan_file(item.path, sub, verify_crc=False)
        except StatecliError as exc:
            sub.errors.append(exc.problem)
        merge(acc, sub, item.name)


class DcpHandler(BaseHandler):
    """A torch.distributed.checkpoint folder (no magic: its `.metadata` file names it)."""

    format = Format.DCP
    magic = False
    writer = staticmethod(write)

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        return is_folder

    def read(self, source: str) -> RawCheckpoint:
        return read(source)

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        try:
            scan(source, findings)
        except StatecliError as exc:  # the folder is still a DCP checkpoint, however broken
            record(findings, exc)
        return Format.DCP


HANDLER = DcpHandler()
