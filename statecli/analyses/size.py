"""`statecli size`: bytes and parameter counts by kind, dtype, device and module; metadata only."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ExitCode
from ..io.stdin import shown_files, shown_path
from ..state import SCHEMA_VERSION, Checkpoint, Container, Entry, Kind, Role, gc_paused
from ..storage import storage_overlap
from ..units import fmt_bytes, fmt_count
from .gguf_view import gguf_view
from .inspect import Bucket, summarize
from .memory import MemoryEstimate, memory_estimate
from .module_tree import ModuleTree, build_tree
from .quantized import QuantSummary, quant_summary


@dataclass(frozen=True)
class ModuleSize:
    module: str
    bucket: Bucket
    share: float  # of the checkpoint's distinct storage bytes (a storage two modules hold counts in both)


@dataclass(frozen=True)
class SizeResult:
    checkpoint: Checkpoint
    file_bytes: int
    total: Bucket
    view_nbytes: int  # bytes if every tensor owned its storage
    duplicate_nbytes: int  # bytes shared storage saves (tied weights, overlapping views)
    outside_nbytes: int  # storage bytes no tensor view covers (slices of larger tensors saved whole)
    parameters: int  # numel of the model state's parameters, shared storage counted once (EMA copies are no parameters)
    by_kind: tuple[Bucket, ...]
    by_dtype: tuple[Bucket, ...]
    by_device: tuple[Bucket, ...]
    by_module: tuple[ModuleSize, ...]
    top: tuple[Entry, ...]
    depth: int
    quant: QuantSummary | None = None  # bits per weight, where weights are quantized
    memory: MemoryEstimate | None = None  # size --memory
    gguf: Any = None  # gguf_view.GgufView of a GGUF: totals by GGML type and block, bits per weight
    model_state: Bucket | None = None  # the model state's tensors alone: the headline figures (None: no model state)
    others: tuple[Container, ...] = ()  # the other containers that hold tensors (optimizer, EMA, ...), as such

    exit_code = ExitCode.OK
    columns = ("module", "tensors", "numel", "nbytes", "share")

    def to_dict(self) -> dict[str, Any]:
        ck = self.checkpoint
        return {
            "schema_version": SCHEMA_VERSION,
            "path": shown_path(ck), "format": str(ck.format), "container": ck.container, "files": shown_files(ck),
            "file_bytes": self.file_bytes, "nbytes": self.total.nbytes, "view_nbytes": self.view_nbytes,
            "duplicate_nbytes": self.duplicate_nbytes, "outside_nbytes": self.outside_nbytes,
            "tensors": self.total.tensors, "numel": self.total.numel,  # every container's tensors
            "parameters": self.parameters, "parameters_human": fmt_count(self.parameters),
            "model_state": self.model_state.to_dict() if self.model_state else None,
            "other_containers": [c.to_dict() for c in self.others],
            "by_kind": {b.key: b.to_dict() for b in self.by_kind},
            "by_dtype": {b.key: b.to_dict() for b in self.by_dtype},
            "by_device": {b.key: b.to_dict() for b in self.by_device},
            "depth": self.depth,
            "by_module": [{"module": m.module, **m.bucket.to_dict(), "share": round(m.share, 6)} for m in self.by_module],
            "top": [e.to_dict() for e in self.top],
            "warnings": ck.warnings, "notes": ck.notes,
        } | ({"quantization": self.quant.to_dict()} if self.quant is not None else {}) | (
            {"memory": self.memory.to_dict()} if self.memory is not None else {}) | (
            {"gguf": self.gguf.to_dict()} if self.gguf is not None else {})

    def module_tree(self) -> ModuleTree:
        """Every tensor by module (the HTML page's tree): its root totals are `total`."""
        ck = self.checkpoint
        return build_tree([e for e in ck.entries if e.tensor is not None], ck.container_name,
                          {m.path: m.class_name for m in ck.modules})

    @property
    def md_title(self) -> str:
        head = self.model_state or self.total
        return f"# {shown_path(self.checkpoint)}: {fmt_bytes(head.nbytes)}, {fmt_count(self.parameters)} params"

    def rows(self) -> list[dict[str, Any]]:
        return [{"module": m.module, "tensors": m.bucket.tensors, "numel": m.bucket.numel, "nbytes": m.bucket.nbytes,
                 "share": f"{m.share:.6f}"} for m in self.by_module]


def size_of(ck: Checkpoint, depth: int = 1, top: int = 10, *, memory: bool = False, context: int | None = None,
            batch: int = 1, kv_dtype: str | None = None) -> SizeResult:
    """Sizes by module, kind, dtype and device; with `memory`, the loaded weights and (with `context`)
    the KV cache (memory.py)."""
    with gc_paused():  # see state.gc_paused
        result = _size_of(ck, depth, top)
    if memory or context is not None:
        result = replace(result, memory=memory_estimate(ck, context, batch, kv_dtype))
    return result


def _size_of(ck: Checkpoint, depth: int, top: int) -> SizeResult:
    tensors = [e for e in ck.entries if e.tensor is not None]
    summary = summarize(tensors)
    view, distinct = summary.view_nbytes, summary.total.nbytes
    rows = build_tree(tensors, ck.container_name).level(depth)  # a storage counted once per module
    sized = [ModuleSize(m.module, Bucket(m.module, m.tensors, m.numel, m.nbytes), m.nbytes / distinct if distinct else 0.0)
             for m in rows]
    by_module = tuple(sorted(sized, key=lambda s: (-s.bucket.nbytes, s.module)))
    model, others = _containers(ck, tensors)
    params = [e for e in tensors if e.kind == Kind.PARAMETER and not e.group]
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
    from ..io.source import file_size

    file_bytes = 0
    for f in ck.files:
        try:
            file_bytes += file_size(f)  # local or remote (a HEAD request)
        except (OSError, StatecliError):
            pass
    # nsmallest is sorted(...)[:top] without sorting every tensor
    largest = tuple(heapq.nsmallest(top, tensors, key=lambda e: (-(e.tensor.nbytes if e.tensor else 0), e.name)))
    shared, outside = storage_overlap(tensors)
    return SizeResult(ck, file_bytes, summary.total, view, shared, outside, n_params,
                      summary.by_kind, summary.by_dtype, summary.by_device, by_module, largest, depth,
                      quant=quant_summary(ck.entries), gguf=gguf_view(ck), model_state=model, others=others)


def _containers(ck: Checkpoint, tensors: list[Entry]) -> tuple[Bucket | None, tuple[Container, ...]]:
    """The model state's totals (None when the file's root is other state: a bare optimizer) and the
    other containers holding tensors, largest first."""
    root = next((c for c in ck.containers if c.name == ck.container_name), None)
    model = None
    if root is None or root.role is Role.MODEL:
        model = summarize([e for e in tensors if not e.group]).total
    others = [c for c in ck.containers if c.tensors and c.name != ck.container_name]
    return model, tuple(sorted(others, key=lambda c: (-c.nbytes, c.name)))
