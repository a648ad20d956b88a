"""The data model every reader produces and every command consumes; plain dataclasses, no torch."""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

from .notes import Note, note_texts, warning_texts
from .qtensor import QuantInfo
from .units import itemsize
from .vocab import Format as Format  # re-exported: the on-disk formats live with the other closed sets

SCHEMA_VERSION = 1  # of every JSON document statecli prints; bumped when a field changes meaning
ROOT = "(root)"  # the name shown for the top of a file: its root container, the root of a module tree
PICKLED_MODULE = "(pickled module)"  # Checkpoint.container of a torch.save(model) file

StorageId = tuple[str | None, str]  # (source file, storage key): see TensorInfo.storage_id

_T = TypeVar("_T")
_V = TypeVar("_V")


def _fast_init(cls: type[_T]) -> type[_T]:
    """Give a frozen dataclass a faster __init__ of the same signature and result. The generated one
    looks up object.__setattr__ afresh for every field (~4 us for TensorInfo's 15 fields, 0.2 s of
    a 50,000-tensor file); this one binds it once. (Filling __dict__ with one update would be
    faster still but doubles each instance: the dict loses CPython's shared-key layout.) The
    class's _cached values are computed here too: stored later, they would turn each instance's
    compact attribute storage into a dict of its own (~600 bytes more a tensor)."""
    params: list[str] = []
    sets: list[str] = []
    defaults: dict[str, Any] = {"_setattr": object.__setattr__}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not MISSING or not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: _fast_init handles plain defaults only")
        if f.default is MISSING:
            params.append(f.name)
        else:
            defaults[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        sets.append(f"    setattr(self, {f.name!r}, {f.name})\n")
    for name, attr in vars(cls).items():  # in definition order: a later one may read an earlier one
        if isinstance(attr, _cached):
            defaults[f"_compute_{name}"] = attr.fn
            sets.append(f"    setattr(self, {name!r}, _compute_{name}(self))\n")
    src = f"def __init__(self, {', '.join(params)}):\n    setattr = _setattr\n{''.join(sets)}"
    ns: dict[str, Any] = {}
    exec(src, defaults, ns)  # noqa: S102 - source built from the class's own field names
    ns["__init__"].__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = ns["__init__"]  # type: ignore[method-assign]
    return cls


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: reading, totalling and printing 50,000 tensors builds
    a million small objects, and the collector's passes over them (on Python 3.11) cost as much
    as the work itself. Nothing built here is garbage until the caller drops it; the previous
    state is restored on the way out."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _cached(Generic[_T, _V]):
    """functools.cached_property without its per-instance lock (Python 3.11 takes an RLock on every
    first read: 1 us a tensor, twice per tensor). Values are pure functions of frozen fields, so a
    race computes the same value twice at worst."""

    def __init__(self, fn: Callable[[_T], _V]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, cls: Any) -> _cached[_T, _V]: ...
    @overload
    def __get__(self, obj: _T, cls: Any) -> _V: ...

    def __get__(self, obj: _T | None, cls: Any) -> _V | _cached[_T, _V]:
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


class Kind(StrEnum):
    """What an entry is to the model. The values are the words shown in tables and JSON."""

    PARAMETER = "parameter"
    BUFFER = "buffer"
    BUFFER_NP = "buffer (non-persistent)"
    ATTRIBUTE = "tensor attribute"  # a plain tensor attribute of a module: neither parameter nor buffer
    OPTIMIZER = "optimizer state"
    METADATA = "metadata"
    UNKNOWN = "unknown"

    @property
    def is_buffer(self) -> bool:
        return self in (Kind.BUFFER, Kind.BUFFER_NP)


KINDS = tuple(Kind)


class Role(StrEnum):
    """What a top-level container of a training checkpoint holds."""

    MODEL = "model state"
    EMA = "ema"
    OPTIMIZER = "optimizer"
    OTHER_STATE = "other state"
    OTHER = "other"
    METADATA = "metadata"


class Verdict(StrEnum):
    """What loading a pickle would do, from the globals it references (see SECURITY.md)."""

    SAFE = "safe"
    NEEDS_TRUST = "needs-trust"
    MALFORMED = "malformed"
    DANGEROUS = "dangerous"

    @property
    def rank(self) -> int:
        return _VERDICT_RANK[self]


_VERDICT_RANK = {Verdict.SAFE: 0, Verdict.NEEDS_TRUST: 1, Verdict.MALFORMED: 2, Verdict.DANGEROUS: 3}


class DiffStatus(StrEnum):
    EQUAL = "equal"
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


class OutputFormat(StrEnum):
    """Every output format a command can be asked for; a result that cannot give one refuses it."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    MD = "md"
    HTML = "html"  # one self-contained page (inspect, size, diff, show)
    SARIF = "sarif"  # SARIF 2.1.0 for code scanning (scan, check, report)
    JUNIT = "junit"  # JUnit XML (report; check writes it with --junit FILE)


class KindFilter(StrEnum):
    """`inspect --kind`: a Kind, or BUFFER for every buffer (persistent or not)."""

    PARAMETER = Kind.PARAMETER.value
    BUFFER = Kind.BUFFER.value
    BUFFER_NP = Kind.BUFFER_NP.value
    ATTRIBUTE = Kind.ATTRIBUTE.value
    OPTIMIZER = Kind.OPTIMIZER.value
    METADATA = Kind.METADATA.value
    UNKNOWN = Kind.UNKNOWN.value


class Source(StrEnum):
    """Where a kind came from, strongest first."""

    MODEL = "model definition"
    PICKLED_MODULE = "pickled module"
    PICKLED_PARAMETER = "pickled as nn.Parameter"
    CONTAINER = "container name"
    RULE = "inferred"
    NOT_IN_MODEL = "not in the model definition"
    OUTSIDE = "outside the model state"
    NOT_TENSOR = "not a tensor"


@dataclass(frozen=True)
class Evidence:
    """Why an entry has its kind: a source and, for rules, which rule ("BatchNorm name")."""

    source: Source
    detail: str = ""

    @property
    def inferred(self) -> bool:
        return self.source is Source.RULE

    @property
    def exact(self) -> bool:
        return self.source in (Source.MODEL, Source.PICKLED_MODULE)

    def __str__(self) -> str:
        return f"{self.source} ({self.detail})" if self.detail else str(self.source)


@_fast_init
@dataclass(frozen=True)
class TensorInfo:
    """One saved tensor, described without its bytes.

    `storage_key` identifies the storage within the checkpoint (file-qualified), so shared, tied
    and view tensors are visible and their bytes counted once. `data_offset` is the absolute byte
    offset of the storage's first byte inside `source`, when the format stores it contiguously.
    """

    dtype: str
    shape: tuple[int, ...]
    device: str = "cpu"
    layout: str = "strided"
    stride: tuple[int, ...] | None = None
    storage_offset: int = 0  # in elements
    storage_key: str | None = None
    storage_nbytes: int | None = None
    storage_dtype: str | None = None
    source: str | None = None
    data_offset: int | None = None
    requires_grad: bool = False
    is_parameter_object: bool = False  # pickled as torch.nn.Parameter
    stored_nbytes: int | None = None  # set where the dense size is wrong (sparse, nested)
    subclass: str | None = None  # a tensor subclass, when the pickle names one
    # A tensor saved in pieces (DCP chunks from several ranks): each piece's offsets in this tensor and
    # where its own bytes are; the tensor has no `source` of its own then.
    pieces: tuple[TensorPiece, ...] = ()
    quant: QuantInfo | None = None  # a quantized logical tensor (layout "quantized"): see qtensor.py

    @_cached
    def numel(self) -> int:
        return math.prod(self.shape)

    @_cached
    def nbytes(self) -> int:
        if self.stored_nbytes is not None:
            return self.stored_nbytes
        return self.numel * itemsize(self.dtype)

    @property
    def storage_size(self) -> int:
        """Bytes of the storage behind this tensor (a view's storage may be larger than the view)."""
        return self.storage_nbytes if self.storage_nbytes is not None else self.nbytes

    @property
    def storage_id(self) -> StorageId | None:
        """The storage's identity across a checkpoint's files (None: the tensor owns its bytes alone):
        tensors with the same id are tied or views of one storage. storage.py does the accounting."""
        return None if self.storage_key is None else (self.source, self.storage_key)

    @property
    def is_contiguous(self) -> bool:
        if self.stride is None:
            return True
        expected = 1
        for size, st in zip(reversed(self.shape), reversed(self.stride)):
            if size != 1 and st != expected:
                return False
            expected *= size
        return True


@dataclass(frozen=True)
class TensorPiece:
    """One saved piece of a larger tensor: it covers offsets[i] .. offsets[i] + info.shape[i]."""

    offsets: tuple[int, ...]
    info: TensorInfo


@dataclass(frozen=True)
class Stats:
    """A tensor's values in brief: min/max/mean/std over finite values, NaN/Inf counts; with the
    picture fields, zeros, |x| percentiles and a histogram of the finite values over [min, max]
    (from every value when `sampled` equals the finite count, else from an evenly spaced sample)."""

    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    nan: int
    inf: int
    note: str | None = None
    numel: int = 0
    zeros: int = 0
    p50_abs: float | None = None
    p99_abs: float | None = None
    hist: tuple[int, ...] = ()  # equal-width bins over [min, max], numpy.histogram's edges
    sampled: int = 0  # finite values the percentiles and histogram were computed from
    finite: int = 0

    def frac(self, count: int) -> float | None:
        return count / self.numel if self.numel else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"min": self.min, "max": self.max, "mean": self.mean, "std": self.std, "nan": self.nan,
                             "inf": self.inf, "note": self.note}
        if self.numel:
            d.update(numel=self.numel, zeros=self.zeros, zero_frac=self.frac(self.zeros), nan_frac=self.frac(self.nan),
                     inf_frac=self.frac(self.inf), p50_abs=self.p50_abs, p99_abs=self.p99_abs)
            if self.hist:
                d["histogram"] = {"lo": self.min, "hi": self.max, "counts": list(self.hist),
                                  "exact": self.sampled == self.finite, "sampled": self.sampled}
        return d


@_fast_init
@dataclass(frozen=True)
class Entry:
    """A named item of a checkpoint: a tensor or a plain value, with its kind and the evidence."""

    name: str
    tensor: TensorInfo | None = None
    value: Any = None  # JSON-able rendering of a non-tensor value
    value_type: str | None = None
    kind: Kind = Kind.UNKNOWN
    evidence: Evidence = Evidence(Source.NOT_TENSOR)
    group: str = ""  # the top-level container this entry came from ("" = the model state)

    def to_dict(self, stats: Stats | None = None) -> dict[str, Any]:
        """The entry as JSON: one shape for inspect, size and every other listing."""
        t = self.tensor
        if t is None:
            return {"name": self.name, "group": self.group or None, "kind": str(self.kind),
                    "evidence": str(self.evidence), "dtype": None, "shape": None, "numel": None, "nbytes": None,
                    "device": None, "value": self.value, "type": self.value_type}
        d: dict[str, Any] = {
            "name": self.name, "group": self.group or None, "kind": str(self.kind), "evidence": str(self.evidence),
            "dtype": t.dtype, "shape": list(t.shape), "numel": t.numel, "nbytes": t.nbytes, "device": t.device,
            "layout": t.layout, "storage": t.storage_key, "storage_offset": t.storage_offset,
            "stride": list(t.stride) if t.stride is not None else None, "contiguous": t.is_contiguous}
        if t.subclass:
            d["subclass"] = t.subclass
        if stats is not None:
            d["stats"] = stats.to_dict()
        return d


@dataclass(frozen=True)
class Container:
    """A top-level group of a checkpoint (model state, optimizer, epoch, ...)."""

    name: str
    role: Role
    entries: int
    tensors: int
    nbytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": str(self.role), "entries": self.entries, "tensors": self.tensors,
                "nbytes": self.nbytes}


@dataclass(frozen=True)
class ModuleNode:
    """A module found in a pickled full-model file (or built from a model definition)."""

    path: str
    class_name: str
    parameters: tuple[str, ...] = ()
    buffers: tuple[str, ...] = ()
    non_persistent: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "class": self.class_name, "parameters": list(self.parameters),
                "buffers": list(self.buffers), "non_persistent": list(self.non_persistent)}


@dataclass(frozen=True)
class Checkpoint:
    """Everything statecli knows about one checkpoint, without tensor bytes. Built once (load.py);
    a later step that adds something makes a new one (dataclasses.replace, with_notes)."""

    path: str
    format: Format
    entries: list[Entry]
    container: str  # which container holds the model state; "" for the file's root
    containers: list[Container] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    unsafe_globals: list[str] = field(default_factory=list)
    messages: tuple[Note, ...] = ()  # warnings and notes, in the order the steps gave them
    modules: list[ModuleNode] = field(default_factory=list)
    torch_metadata: Any = None  # state_dict()._metadata as saved (per-module versions)

    @property
    def warnings(self) -> list[str]:
        return warning_texts(self.messages)

    @property
    def notes(self) -> list[str]:
        return note_texts(self.messages)

    def with_notes(self, notes: Iterable[Note]) -> Checkpoint:
        """This checkpoint with more messages; one already present is not repeated."""
        new = tuple(n for n in dict.fromkeys(notes) if n not in self.messages)
        return replace(self, messages=self.messages + new) if new else self

    @property
    def container_name(self) -> str:
        """The model state's container as shown: ROOT for the file's root."""
        return self.container or ROOT

    @property
    def is_pickled_module(self) -> bool:
        """A torch.save(model) file: the model state is the pickled module itself."""
        return self.container == PICKLED_MODULE


def contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The row-major stride torch gives a contiguous tensor of this shape."""
    stride, acc = [], 1
    for s in reversed(shape):
        stride.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(stride))


def prefix_matches(keys: list[str], targets: list[str] | set[str]) -> dict[str, int]:
    """For each dotted prefix p ('module.', 'model.encoder.'), how many `keys` equal a target after
    removing p: the evidence for a --strip-prefix (or, read the other way, --add-prefix) fix."""
    wanted = set(targets)
    counts: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        for i in range(1, len(parts)):
            p = ".".join(parts[:i]) + "."
            if k[len(p):] in wanted:
                counts[p] = counts.get(p, 0) + 1
    return counts
