"""`statecli size`: bytes and parameter counts by kind, dtype, device and module; metadata only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..state import SCHEMA_VERSION, Checkpoint, Entry, Kind, storage_overlap, unique_storage_bytes
from ..units import fmt_bytes, fmt_count
from .inspect import Bucket, bucket, group_by


@dataclass(frozen=True)
class ModuleSize:
    module: str
    bucket: Bucket
    share: float  # of the checkpoint's distinct storage bytes


@dataclass(frozen=True)
class SizeResult:
    checkpoint: Checkpoint
    file_bytes: int
    total: Bucket
    view_nbytes: int  # bytes if every tensor owned its storage
    duplicate_nbytes: int  # bytes shared storage saves (tied weights, overlapping views)
    outside_nbytes: int  # storage bytes no tensor view covers (slices of larger tensors saved whole)
    parameters: int  # numel of parameters, shared storage counted once
    by_kind: tuple[Bucket, ...]
    by_dtype: tuple[Bucket, ...]
    by_device: tuple[Bucket, ...]
    by_module: tuple[ModuleSize, ...]
    top: tuple[Entry, ...]
    depth: int

    exit_code = 0
    columns = ("module", "tensors", "numel", "nbytes", "share")

    def to_dict(self) -> dict[str, Any]:
        ck = self.checkpoint
        return {
            "schema_version": SCHEMA_VERSION,
            "path": ck.path, "format": str(ck.format), "container": ck.container, "files": ck.files,
            "file_bytes": self.file_bytes, "nbytes": self.total.nbytes, "view_nbytes": self.view_nbytes,
            "duplicate_nbytes": self.duplicate_nbytes, "outside_nbytes": self.outside_nbytes,
            "tensors": self.total.tensors, "numel": self.total.numel,
            "parameters": self.parameters, "parameters_human": fmt_count(self.parameters),
            "by_kind": {b.key: b.to_dict() for b in self.by_kind},
            "by_dtype": {b.key: b.to_dict() for b in self.by_dtype},
            "by_device": {b.key: b.to_dict() for b in self.by_device},
            "depth": self.depth,
            "by_module": [{"module": m.module, **m.bucket.to_dict(), "share": round(m.share, 6)} for m in self.by_module],
            "top": [e.to_dict() for e in self.top],
            "warnings": ck.warnings, "notes": ck.notes,
        }

    @property
    def md_title(self) -> str:
        return f"# {self.checkpoint.path}: {fmt_bytes(self.total.nbytes)}, {fmt_count(self.parameters)} params"

    def rows(self) -> list[dict[str, Any]]:
        return [{"module": m.module, "tensors": m.bucket.tensors, "numel": m.bucket.numel, "nbytes": m.bucket.nbytes,
                 "share": f"{m.share:.6f}"} for m in self.by_module]


def module_of(e: Entry, depth: int) -> str:
    name = e.name if not e.group or e.name.startswith(e.group) else f"{e.group}.{e.name}"
    parts = name.split(".")
    return ".".join(parts[:depth]) if len(parts) > depth else ".".join(parts[:-1]) or "(root)"


def size_of(ck: Checkpoint, depth: int = 1, top: int = 10) -> SizeResult:
    tensors = [e for e in ck.entries if e.tensor is not None]
    view, distinct = unique_storage_bytes(tensors)
    modules: dict[str, list[Entry]] = {}
    owned: dict[str, list[Entry]] = {}  # a shared storage is billed to the first module that holds it
    owner: set[tuple[str | None, str]] = set()
    for e in tensors:
        m = module_of(e, depth)
        modules.setdefault(m, []).append(e)
        t = e.tensor
        assert t is not None
        skey = (t.source, t.storage_key) if t.storage_key is not None else None
        if skey is None or skey not in owner:
            owned.setdefault(m, []).append(e)
            if skey is not None:
                owner.add(skey)
    sized = []
    for m, es in modules.items():
        b = bucket(m, es)
        nbytes = unique_storage_bytes(owned.get(m, []))[1]
        sized.append(ModuleSize(m, Bucket(m, b.tensors, b.numel, nbytes), nbytes / distinct if distinct else 0.0))
    by_module = tuple(sorted(sized, key=lambda s: (-s.bucket.nbytes, s.module)))
    params = [e for e in tensors if e.kind == Kind.PARAMETER]
    seen: set[tuple[str | None, str | None, int, tuple[int, ...]]] = set()
    n_params = 0
    for e in params:
        t = e.tensor
        assert t is not None
        key = (t.source, t.storage_key, t.storage_offset, t.shape)
        if t.storage_key is None or key not in seen:  # a tied parameter is one parameter
            n_params += t.numel
            seen.add(key)
    from ..errors import StatecliError
    from ..formats.source import file_size

    file_bytes = 0
    for f in ck.files:
        try:
            file_bytes += file_size(f)  # local or remote (a HEAD request)
        except (OSError, StatecliError):
            pass
    largest = tuple(sorted(tensors, key=lambda e: (-(e.tensor.nbytes if e.tensor else 0), e.name))[:top])
    shared, outside = storage_overlap(tensors)
    return SizeResult(ck, file_bytes, bucket("total", tensors), view, shared, outside, n_params,
                      group_by(tensors, "kind"), group_by(tensors, "dtype"), group_by(tensors, "device"),
                      by_module, largest, depth)
