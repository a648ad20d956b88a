"""A JSON cache of Hugging Face model descriptions and of the results computed against them, so that
classifying a folder with a config.json a second time imports neither torch nor transformers."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..io.limits import read_json_file
from ..notes import Note, NoteKind
from ..state import Checkpoint, Kind, ModuleNode
from ..vocab import ReportProblem
from .loader import KeyMatch
from .model import ModelInfo, ModelSlot, ReportLine

# How a cache miss gets the live model: set by hf.py (which imports this module, not the reverse).
BUILD: Callable[[str], ModelInfo] | None = None

FORMAT = 2  # bump when the layout of an entry changes (2: ReportLine.problem is a ReportProblem)
MAX_ENTRIES = 512  # files kept; a new build prunes the least recently used down to 3/4 of this
_LIVE = frozenset({"model", "hf", "memo"})  # ModelInfo fields that hold live objects, never cached
# Only these types are decoded: an entry names a type from this list, never code (a cache is not a
# code-execution vector, which is why this is JSON and not pickle).
_CLASSES: dict[str, type] = {c.__name__: c for c in (ModelSlot, ModuleNode, KeyMatch, ReportLine)}
_ENUMS: dict[str, type[enum.Enum]] = {"Kind": Kind, "ReportProblem": ReportProblem}


class Unencodable(TypeError):
    """A value this cache cannot store exactly; the result is then not cached (never approximated)."""


def cache_dir() -> Path | None:
    """STATECLI_CACHE_DIR, else $XDG_CACHE_HOME/statecli, else ~/.cache/statecli; None when
    STATECLI_NO_CACHE is set to anything but empty or 0."""
    if os.environ.get("STATECLI_NO_CACHE", "") not in ("", "0"):
        return None
    explicit = os.environ.get("STATECLI_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "statecli"


def transformers_version() -> str | None:
    """The installed transformers' version, from its metadata (importing it costs seconds): the
    dist-info beside the package that `import transformers` would load, else importlib.metadata."""
    global _VERSION
    if _VERSION is None:
        _VERSION = (_version_beside_package() or _version_from_metadata(),)
    return _VERSION[0]


_VERSION: tuple[str | None] | None = None


def _version_beside_package() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.origin:
        return None
    found = list(Path(spec.origin).parent.parent.glob("transformers-*.dist-info/METADATA"))
    if len(found) != 1:  # none, or stale leftovers: let importlib.metadata decide
        return None
    try:
        with open(found[0], encoding="utf-8") as f:
            for line in f:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    except OSError:
        pass
    return None


def _version_from_metadata() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None


def _code_stamp() -> str:
    """statecli's version plus the size and mtime of modeldef's sources and the cached types' fields:
    a development checkout that changes how descriptions or reports are made never reads old entries."""
    from .. import __version__

    parts = [f"format={FORMAT}", f"statecli={__version__}"]
    here = Path(__file__).parent
    for src in [*sorted(here.glob("*.py")), here.parent / "state.py"]:
        st = src.stat()
        parts.append(f"{src.name}:{st.st_size}:{st.st_mtime_ns}")
    for cls in (ModelInfo, *_CLASSES.values()):
        parts.append(cls.__name__ + ":" + ",".join(f.name for f in dataclasses.fields(cls)))  # type: ignore[arg-type]
    return "\n".join(parts)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:40]


def encode(value: Any) -> Any:
    """A JSON-ready form of `value` that `decode` turns back into an equal value; raises Unencodable."""
    if value is None or isinstance(value, (bool, int, float)) and not isinstance(value, enum.Enum):
        return value
    if isinstance(value, enum.Enum):  # before str: the StrEnums are strs too
        if type(value).__name__ not in _ENUMS:
            raise Unencodable(type(value).__name__)
        return {"$enum": type(value).__name__, "v": value.value}
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise Unencodable("dict with non-str keys")
        return {"$dict": {k: encode(v) for k, v in value.items()}}
    if dataclasses.is_dataclass(value) and type(value).__name__ in _CLASSES:
        return {"$obj": type(value).__name__,
                "f": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    raise Unencodable(type(value).__name__)


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$tuple" in value:
        return tuple(decode(v) for v in value["$tuple"])
    if "$dict" in value:
        return {k: decode(v) for k, v in value["$dict"].items()}
    if "$enum" in value:
        return _ENUMS[value["$enum"]](value["v"])
    if "$obj" in value:
        return _CLASSES[value["$obj"]](**{k: decode(v) for k, v in value["f"].items()})
    raise ValueError("not a cache value")


def _read(path: Path) -> Any:
    """The entry's payload, or None when it is absent, unreadable, corrupt or of another format."""
    try:
        doc = read_json_file(str(path))
        if doc.get("format") != FORMAT:
            return None
        data = decode(doc["data"])
    except Exception:  # noqa: BLE001 - any damage means a miss; the entry is rewritten after the build
        return None
    try:
        os.utime(path)  # recently used: _prune keeps it
    except OSError:
        pass
    return data


def _write(path: Path, data: Any) -> None:
    """Atomically (temp file + os.replace); a failure to write only costs the next run a rebuild."""
    try:
        text = json.dumps({"format": FORMAT, "data": encode(data)}, separators=(",", ":"))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, Unencodable, ValueError, TypeError):
        pass


@dataclasses.dataclass
class Memo:
    """The cache entries of one config (content + transformers + statecli): the description, and the
    key mappings and load reports computed against it, per set of file keys. A miss builds the live
    model (once) and stores what it computed."""

    config_path: str
    key: str | None  # None: caching is off or impossible; the memo only carries the note
    folder: Path | None
    from_pretrained: bool  # the model loads with from_pretrained (transformers' conversion mapping)
    note: str = ""

    def _path(self, kind: str, digest: str = "") -> Path | None:
        if self.folder is None or self.key is None:
            return None
        return self.folder / f"{self.key}{'-' + kind if kind else ''}{'-' + digest if digest else ''}.json"

    def materialize(self, info: ModelInfo) -> None:
        """Give `info` the live model and transformers' loader (built now: a cache miss)."""
        if info.model is not None:
            return
        if BUILD is None:
            raise RuntimeError("statecli.modeldef.hf registers the model builder on import")
        live = BUILD(self.config_path)
        info.model, info.hf = live.model, live.hf

    def map_keys(self, info: ModelInfo, names: Iterable[str]) -> dict[str, KeyMatch]:
        names = list(names)
        path = self._path("map", _digest(*sorted(names)))
        if path is not None:
            hit = _read(path)
            if isinstance(hit, list):
                return dict(hit)
        self.materialize(info)
        info.memo = None  # the live path below, not this one again
        try:
            out = info.map_keys(names)
        finally:
            info.memo = self
        if path is not None:
            _write(path, [(k, v) for k, v in out.items()])
        return out

    def load_report(self, ck: Checkpoint, info: ModelInfo) -> tuple[list[ReportLine], list[Note]]:
        from .report import keyed_report

        path = self._path("report", _checkpoint_digest(ck))
        if path is not None:
            hit = _read(path)
            if isinstance(hit, dict):
                return list(hit["lines"]), [Note(NoteKind.LOAD_REPORT, w) for w in hit["warnings"]]
        self.materialize(info)
        info.memo = None
        try:
            lines, notes = keyed_report(ck, info)
        finally:
            info.memo = self
        if path is not None:
            _write(path, {"lines": list(lines), "warnings": [n.text for n in notes]})
        return lines, notes


def _prune(folder: Path) -> None:
    """Drop the least recently used entries once there are more than MAX_ENTRIES (on a build only)."""
    try:
        entries = [(p.stat().st_mtime, p) for p in folder.glob("*.json")]
        if len(entries) <= MAX_ENTRIES:
            return
        for _, p in sorted(entries)[:len(entries) - MAX_ENTRIES * 3 // 4]:
            p.unlink(missing_ok=True)
    except OSError:
        pass


def _checkpoint_digest(ck: Checkpoint) -> str:
    """Everything of the checkpoint a load report reads: keys, shapes, dtypes, containers, metadata."""
    rows = sorted(json.dumps([e.name, e.group, None if e.tensor is None else list(e.tensor.shape),
                              None if e.tensor is None else e.tensor.dtype, e.value_type], default=str)
                  for e in ck.entries)
    containers = [f"{c.name}:{c.role}" for c in ck.containers]
    meta = json.dumps(ck.torch_metadata_dicts(), default=repr, sort_keys=True) if ck.torch_metadata is not None else ""
    return _digest(str(ck.container), *containers, meta, *rows)


def _config_key(config_path: str) -> str | None:
    version = transformers_version()
    if version is None:
        return None
    try:
        content = Path(config_path).read_bytes()
    except OSError:
        return None
    return _digest(content, f"transformers={version}", _code_stamp())


def _note(config_path: str, info: ModelInfo, how: str) -> str:
    return f"classified against {config_path} ({info.class_name}, transformers {transformers_version()}; {how})"


def lookup(config_path: str) -> ModelInfo | None:
    """The cached description of this config as a ModelInfo without live objects (they are built
    on a later miss), or None; imports neither torch nor transformers."""
    folder = cache_dir()
    key = _config_key(config_path) if folder is not None else None
    if folder is None or key is None:
        return None
    memo = Memo(config_path, key, folder, False)
    path = memo._path("")
    assert path is not None
    hit = _read(path)
    if not isinstance(hit, dict):
        return None
    try:
        fields = dict(hit["fields"])
        built_path = hit["config_path"]
        fields["spec"] = str(fields["spec"]).replace(built_path, config_path)
        info = ModelInfo(**fields)
    except Exception:  # noqa: BLE001 - a damaged entry is a miss
        return None
    memo.from_pretrained = bool(hit["from_pretrained"])
    info.memo = memo
    memo.note = _note(config_path, info, "cached description")
    return info


def store(config_path: str, info: ModelInfo, seconds: float) -> None:
    """Remember a description built now and attach a Memo to `info` (so its key mappings and load
    reports are stored too); says in `info.memo.note` how it was made."""
    folder = cache_dir()
    key = _config_key(config_path) if folder is not None else None
    memo = Memo(config_path, key, folder, info.hf is not None)
    info.memo = memo
    built = f"built now in {seconds:.1f} s"
    if folder is None:
        memo.note = _note(config_path, info, f"{built}; not cached: STATECLI_NO_CACHE is set")
        return
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(info) if f.name not in _LIVE}
    path = memo._path("")
    try:
        encode(fields)
    except Unencodable:
        memo.key = None  # something this cache cannot hold exactly: never store an approximation
        memo.note = _note(config_path, info, built)
        return
    if path is not None:
        _prune(path.parent)
        _write(path, {"fields": fields, "config_path": config_path, "from_pretrained": memo.from_pretrained,
                      "written": time.time()})
    memo.note = _note(config_path, info, f"{built}; cached for next time")
