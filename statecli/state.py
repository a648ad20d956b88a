"""The data model every reader produces and every command consumes; plain dataclasses, no torch."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from .fastdata import cached, fast_init
from .fastdata import gc_paused as gc_paused  # re-exported: the readers and renderers pause it from here
from .notes import Note, note_texts, warning_texts
from .qtensor import QuantInfo
from .units import itemsize, non_finite_str
from .vocab import Format as Format  # re-exported: the on-disk formats live with the other closed sets

SCHEMA_VERSION = 1  # of every JSON document statecli prints; bumped when a field changes meaning
ROOT = "(root)"  # the name shown for the top of a file: its root container, the root of a module tree
PICKLED_MODULE = "(pickled module)"  # Checkpoint.container of a torch.save(model) file

StorageId = tuple[str | None, str]  # (source file, storage key): see TensorInfo.storage_id

class Kind(StrEnum):
    """What an entry is to the model. The values are the words shown in tables and JSON."""

    PARAMETER = "parameter"
    BUFFER = "buffer"
    BUFFER_NP = "buffer (non-persistent)"
    ATTRIBUTE = "tensor attribute"  # a plain tensor attribute of a module: neither parameter nor buffer
    CONSTANT = "constant"  # a torch.export constant (lifted tensor, custom object): in no state_dict
    INITIALIZER = "initializer"  # an ONNX graph's initializer: ONNX has no parameter/buffer split
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
    SCHEDULER = "scheduler"  # an lr scheduler's state_dict(): step counts and learning rates, no optimizer state
    OTHER_STATE = "other state"
    # torch.export's ep.constants: lifted constants and non-persistent buffers (the model's, not training's)
    CONSTANTS = "program constants"
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
    FOLDED = "folded by the exporter"  # a BatchNorm an ONNX export merged into the layer before it


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
    CONSTANT = Kind.CONSTANT.value
    INITIALIZER = Kind.INITIALIZER.value
    OPTIMIZER = Kind.OPTIMIZER.value
    METADATA = Kind.METADATA.value
    UNKNOWN = Kind.UNKNOWN.value


class Source(StrEnum):
    """Where a kind came from, strongest first."""

    MODEL = "model definition"
    PICKLED_MODULE = "pickled module"
    EXPORT = "export signature"  # a torch.export graph signature (formats/pt2.py)
    ONNX = "onnx graph"  # an ONNX graph's initializer list (formats/onnx.py)
    PICKLED_PARAMETER = "pickled as nn.Parameter"
    CONTAINER = "container name"
    RULE = "inferred"
    FORMAT = "file format"  # the format says what its tensors are, in its own word alone ("GGUF tensor")
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
        return self.source in (Source.MODEL, Source.PICKLED_MODULE, Source.EXPORT)

    def __str__(self) -> str:
        plain = not self.detail or self.source is Source.FORMAT
        return self.detail or str(self.source) if plain else f"{self.source} ({self.detail})"


@fast_init
@dataclass(frozen=True)
class TensorInfo:
    """One saved tensor, described without its bytes.

    `storage_key` identifies the storage within the checkpoint (file-qualified), so shared, tied
    and view tensors are visible and their bytes counted once. `data_offset` is the absolute byte
    offset of the storage's first byte inside `source`, when the format stores it contiguously."""

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
    pieces: tuple[TensorPiece, ...] = ()  # saved in pieces (DCP chunks of several ranks); then no `source` of its own
    quant: QuantInfo | None = None  # a quantized logical tensor (layout "quantized"): see qtensor.py

    @cached
    def numel(self) -> int:
        return math.prod(self.shape)

    @cached
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
    """A tensor's values in brief. `min`/`max`/`mean`/`std` are what torch shows for the whole tensor (NaN
    when it holds a NaN; an Inf reaches min/max/mean and makes std NaN); the `finite_*` figures are over
    the finite values only. With the picture fields: zeros, |x| percentiles and a histogram of the finite
    values over [finite_min, finite_max], from every finite value (`exact`) or from a uniform random sample
    of `sampled` of them (positions drawn with replacement, independent of the values)."""

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
    hist: tuple[int, ...] = ()  # equal-width bins over [finite_min, finite_max], numpy.histogram's edges
    sampled: int = 0  # finite values the percentiles and histogram were computed from
    finite: int = 0
    finite_min: float | None = None
    finite_max: float | None = None
    finite_mean: float | None = None
    finite_std: float | None = None
    exact: bool = True  # percentiles and histogram from every finite value, not a sample

    def frac(self, count: int) -> float | None:
        return count / self.numel if self.numel else None

    @property
    def has_non_finite(self) -> bool:
        return bool(self.nan or self.inf)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"min": self.min, "max": self.max, "mean": self.mean, "std": self.std, "nan": self.nan,
                             "inf": self.inf, "note": self.note}
        if self.numel:
            d.update(numel=self.numel, zeros=self.zeros, zero_frac=self.frac(self.zeros), nan_frac=self.frac(self.nan),
                     inf_frac=self.frac(self.inf), finite=self.finite, finite_min=self.finite_min,
                     finite_max=self.finite_max, finite_mean=self.finite_mean, finite_std=self.finite_std, exact=self.exact,
                     p50_abs=self.p50_abs, p99_abs=self.p99_abs, percentiles_of="finite values", sampled=self.sampled)
            if self.hist:
                d["histogram"] = {"lo": self.finite_min, "hi": self.finite_max, "counts": list(self.hist),
                                  "exact": self.exact, "sampled": self.sampled}
        return {k: non_finite_str(v) for k, v in d.items()}


@fast_init
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
        if t.quant is not None:
            d["quant"] = t.quant.to_dict(t.nbytes, t.numel)
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
    a later step that adds something makes a new one (dataclasses.replace, with_notes). Immutable
    all through: one checkpoint is read by every step of a command (and both sides of a diff), so its
    collections are tuples and a read-only mapping, whatever a caller passes."""

    path: str
    format: Format
    entries: tuple[Entry, ...]
    container: str  # which container holds the model state; "" for the file's root
    containers: tuple[Container, ...] = ()
    files: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    unsafe_globals: tuple[str, ...] = ()
    messages: tuple[Note, ...] = ()  # warnings and notes, in the order the steps gave them
    modules: tuple[ModuleNode, ...] = ()
    torch_metadata: Mapping[str, Any] | None = None  # state_dict()._metadata (per-module versions), read-only
    label: str | None = None  # how output names it where `path` is no name of the user's (io.stdin.shown_path)

    def __post_init__(self) -> None:
        # tuple() of a tuple is the tuple itself: replace() of 50,000 entries copies nothing.
        for name in ("entries", "containers", "files", "unsafe_globals", "messages", "modules"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.metadata, MappingProxyType):
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        if not isinstance(self.torch_metadata, MappingProxyType):
            object.__setattr__(self, "torch_metadata", _read_only(self.torch_metadata))

    def torch_metadata_dicts(self) -> dict[str, Any] | None:
        """torch_metadata as the plain dicts torch's load_state_dict (and json) take: fresh copies."""
        plain: dict[str, Any] | None = _plain(self.torch_metadata)
        return plain

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

    def outside_state_dict(self, e: Entry) -> bool:
        """A tensor a pickled module holds that its state_dict() leaves out (a non-persistent buffer, a
        plain tensor attribute): load_state_dict never sees it, so no load report counts it."""
        return (self.is_pickled_module and e.evidence.source is Source.PICKLED_MODULE
                and e.kind in (Kind.BUFFER_NP, Kind.ATTRIBUTE))


def _read_only(meta: Any) -> Any:
    """A saved `_metadata` frozen: mappings become read-only copies, lists tuples, all the way down; one
    that is not a mapping (no torch wrote it) is dropped, as torch could not use it either."""
    def freeze(v: Any) -> Any:
        if isinstance(v, Mapping):
            return MappingProxyType({k: freeze(x) for k, x in v.items()})
        return tuple(freeze(x) for x in v) if isinstance(v, (list, tuple)) else v

    return freeze(meta) if isinstance(meta, Mapping) else None


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    return [_plain(x) for x in v] if isinstance(v, tuple) else v


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


@dataclass(frozen=True)
class ModelChoice:
    """Which model definition to classify against: --model (with arguments), --hf-config, or (auto_hf) a config.json beside it."""

    model: str | None = None
    model_args: tuple[str, ...] = ()
    model_kwargs: str | None = None
    hf_config: str | None = None
    auto_hf: bool = False

    @property
    def explicit(self) -> bool:
        """A model was named (--model or --hf-config), not only found beside the checkpoint."""
        return bool(self.model or self.hf_config)

    def config_only(self) -> ModelChoice:
        """The Hugging Face config evidence alone (check takes --model as its matches-model rule instead)."""
        return replace(self, model=None, model_args=(), model_kwargs=None)
