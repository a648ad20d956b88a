"""A user's model definition or a Hugging Face config, built on the meta device: the model's slots
(parameter, buffer, non-persistent buffer, ties) and how file keys map onto them."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..state import Kind, ModuleNode
from ..vocab import ReportProblem
from .loader import HfLoader, KeyMatch


@dataclass(frozen=True)
class ModelSlot:
    """One named tensor slot of the model: a parameter or a (non-)persistent buffer."""

    name: str
    kind: Kind
    dtype: str
    shape: tuple[int, ...]
    tied_to: str | None = None  # another state key holding the same Parameter object


@dataclass(frozen=True)
class ReportLine:
    """One line of a load report. `blocking`: the model's own loader (from_pretrained for a Hugging
    Face model, load_state_dict(strict=True) otherwise) reports it; `strict_blocking`: plain
    load_state_dict(strict=True) would fail on it (the same as `blocking` for non-HF models)."""

    key: str
    problem: ReportProblem
    explanation: str
    fix: str | None = None
    blocking: bool = True
    strict_blocking: bool | None = None  # None: same as blocking
    keys: tuple[str, ...] = ()  # a line for many keys (one rename rule): every key it stands for

    @property
    def fails_strict(self) -> bool:
        return self.blocking if self.strict_blocking is None else self.strict_blocking

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "problem": self.problem, "explanation": self.explanation, "fix": self.fix,
                "blocking": self.blocking, "strict_blocking": self.fails_strict, "keys": list(self.keys or (self.key,))}


@dataclass
class ModelInfo:
    spec: str
    class_name: str
    slots: dict[str, ModelSlot]
    state_keys: list[str]
    modules: list[ModuleNode]
    built_on: str
    warnings: list[str] = field(default_factory=list)
    model: Any = None  # the meta-device nn.Module, kept for torch's own load_state_dict logic
    # Hugging Face models: key renames transformers applies on load (regex, replacement) and the
    # base-model prefix it adds or strips between XModel and XForY checkpoints.
    renames: list[tuple[str, str]] = field(default_factory=list)
    base_model_prefix: str | None = None
    hf: HfLoader | None = None  # transformers' own key conversions and from_pretrained semantics
    memo: Any = None  # cache.Memo: stored results for a cached description; builds `model`/`hf` on a miss

    @property
    def loader(self) -> str:
        hf = self.hf is not None or (self.memo is not None and self.memo.from_pretrained)
        return "from_pretrained" if hf else "load_state_dict(strict=True)"

    def map_keys(self, names: Iterable[str]) -> dict[str, KeyMatch]:
        """{file key: the model entries it becomes} for the keys the model knows."""
        if self.memo is not None:  # cache.py: stored for this key set, else computed live and stored
            return self.memo.map_keys(self, names)
        if self.hf is not None:
            return self.hf.map_keys(names)
        return {n: KeyMatch((n,)) for n in names if n in self.slots}

    def to_dict(self) -> dict[str, Any]:
        modules = [{"path": m.path, "class": m.class_name, "parameters": list(m.parameters),
                    "buffers": list(m.buffers), "non_persistent": list(m.non_persistent)} for m in self.modules]
        return {"spec": self.spec, "class": self.class_name, "built_on": self.built_on, "modules": modules,
                "loader": self.loader}


def parse_model_args(args: list[str], kwargs_json: str | None) -> dict[str, Any]:
    """--model-arg key=value (Python literal, else string) and --model-kwargs JSON, merged."""
    out: dict[str, Any] = {}
    if kwargs_json:
        try:
            parsed = json.loads(kwargs_json)
        except ValueError as exc:
            raise UsageError(None, f"--model-kwargs is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise UsageError(None, "--model-kwargs must be a JSON object")
        out.update(parsed)
    for item in args:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(None, f"--model-arg {item!r} is not key=value")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def _resolve(spec: str) -> Any:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(None, f"--model {spec!r} must be 'package.module:Name' or 'path/to/file.py:Name'")
    try:
        if target.endswith(".py") or os.sep in target or "/" in target:
            if not os.path.isfile(target):
                raise UsageError(target, "model definition file not found")
            folder = os.path.dirname(os.path.abspath(target))
            name = f"_statecli_model_{abs(hash(os.path.abspath(target)))}"
            mspec = importlib.util.spec_from_file_location(name, target)
            if mspec is None or mspec.loader is None:
                raise UsageError(target, "cannot import this file")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[name] = module
            sys.path.insert(0, folder)  # let the file import its siblings
            try:
                mspec.loader.exec_module(module)
            finally:
                sys.path.remove(folder)
        else:
            module = importlib.import_module(target)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code may raise anything; report it on one line
        raise UsageError(target, f"importing the model definition failed: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(target, f"has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def build_model(spec: str, kwargs: dict[str, Any]) -> ModelInfo:
    """Import the definition (this runs the user's code, by their explicit choice) and build it
    under torch.device('meta') so no weights are allocated; fall back to CPU with a warning."""
    import torch

    factory = _resolve(spec)
    notes: list[str] = []
    built_on = "meta"
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"the model could not be built on the meta device ({type(exc).__name__}: {exc}); "
                     "built on CPU instead, which allocates its weights")
        built_on = "cpu"
        try:
            model = factory(**kwargs)
        except Exception as exc2:  # noqa: BLE001
            raise UsageError(spec, f"building the model failed: {type(exc2).__name__}: {exc2}") from exc2
    if not isinstance(model, torch.nn.Module):
        raise UsageError(spec, f"returned a {type(model).__name__}, not a torch.nn.Module")
    return describe(model, spec, built_on, notes)


def describe(model: Any, spec: str, built_on: str = "meta", notes: list[str] | None = None) -> ModelInfo:
    slots: dict[str, ModelSlot] = {}
    modules: list[ModuleNode] = []
    owner: dict[int, str] = {}
    for mpath, mod in model.named_modules(remove_duplicate=False):
        dot = f"{mpath}." if mpath else ""
        np_set = set(getattr(mod, "_non_persistent_buffers_set", set()))
        params = [(n, p) for n, p in mod._parameters.items() if p is not None]
        bufs = [(n, b) for n, b in mod._buffers.items() if b is not None]
        modules.append(ModuleNode(path=mpath, class_name=type(mod).__name__,
                                  parameters=tuple(n for n, _ in params), buffers=tuple(n for n, _ in bufs),
                                  non_persistent=tuple(sorted(np_set))))
        for n, p in params:
            key = dot + n
            first = owner.setdefault(id(p), key)
            slots[key] = ModelSlot(key, Kind.PARAMETER, str(p.dtype).removeprefix("torch."), tuple(p.shape),
                                   tied_to=first if first != key else None)
        for n, b in bufs:
            key = dot + n
            kind = Kind.BUFFER_NP if n in np_set else Kind.BUFFER
            slots[key] = ModelSlot(key, kind, str(b.dtype).removeprefix("torch."), tuple(b.shape))
    # The tie is symmetric: the first name owns the Parameter; record the partner on it too.
    for key, slot in list(slots.items()):
        if slot.tied_to and slots[slot.tied_to].tied_to is None:
            s = slots[slot.tied_to]
            slots[slot.tied_to] = ModelSlot(s.name, s.kind, s.dtype, s.shape, tied_to=key)
    state_keys = list(model.state_dict(keep_vars=True).keys())
    return ModelInfo(spec=spec, class_name=type(model).__name__, slots=slots, state_keys=state_keys,
                     modules=modules, built_on=built_on, warnings=list(notes or []), model=model)


def find_hf_config(path: str) -> str | None:
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    cfg = os.path.join(folder, "config.json")
    return cfg if os.path.isfile(cfg) else None
