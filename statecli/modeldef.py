"""Load a user's model definition, build it on the meta device, and classify a checkpoint against it
with an explained load report (what `load_state_dict(strict=True)` would say, and the fix)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import BadInput, UsageError
from .state import Checkpoint, Entry, Evidence, Kind, ModuleNode, Source, prefix_matches


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
    key: str
    problem: str  # "missing", "unexpected", "shape mismatch", "dtype differs"
    explanation: str
    fix: str | None = None
    blocking: bool = True


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


def classify_with_model(ck: Checkpoint, info: ModelInfo) -> None:
    """Exact kinds for the model-state entries; entries the model does not know stay visible."""
    out = []
    for e in ck.entries:
        if e.group != "" or e.tensor is None:
            out.append(e)
            continue
        slot = info.slots.get(e.name)
        if slot is None:
            kind, ev = Kind.UNKNOWN, Evidence(Source.NOT_IN_MODEL)
        else:
            kind, ev = slot.kind, Evidence(Source.MODEL)
        out.append(Entry(name=e.name, tensor=e.tensor, value=e.value, value_type=e.value_type, kind=kind,
                         evidence=ev, group=e.group))
    ck.entries = out
    ck.modules = info.modules
    ck.warnings.extend(info.warnings)


def _prefix_fix(unexpected: list[str], missing: list[str]) -> tuple[str, str, int] | None:
    """The --strip-prefix or --add-prefix that turns the most unexpected keys into missing ones."""
    best: tuple[str, str, int] | None = None
    counts = {("--strip-prefix", p): n for p, n in prefix_matches(unexpected, missing).items()}
    counts |= {("--add-prefix", p): n for p, n in prefix_matches(missing, unexpected).items()}
    for (flag, p), n in counts.items():
        if best is None or n > best[2]:
            best = (flag, p, n)
    return best


def load_report(ck: Checkpoint, info: ModelInfo) -> list[ReportLine]:
    """What load_state_dict(strict=True) would report, each line explained, with its fix."""
    import torch

    file_tensors = {e.name: e.tensor for e in ck.entries if e.group == "" and e.tensor is not None}
    file_values = {e.name for e in ck.entries if e.group == "" and e.tensor is None}
    lines: list[ReportLine] = []
    mismatched: set[str] = set()
    for name, t in file_tensors.items():
        slot = info.slots.get(name)
        if slot is None or slot.kind == Kind.BUFFER_NP or name not in info.state_keys:
            continue
        if tuple(t.shape) != slot.shape:
            mismatched.add(name)
            lines.append(ReportLine(name, "shape mismatch",
                                    f"file has {list(t.shape)}, model expects {list(slot.shape)}",
                                    "check --model-arg values (e.g. num_classes, vocab size) or drop the key"))
        elif t.dtype != slot.dtype:
            lines.append(ReportLine(name, "dtype differs", f"file has {t.dtype}, model has {slot.dtype}; "
                                    "load_state_dict copies with a cast", None, blocking=False))
    # torch's own logic (hooks such as BatchNorm's num_batches_tracked handling) on meta tensors.
    fake: dict[str, Any] = {}
    for name, t in file_tensors.items():
        if name in mismatched:
            slot = info.slots[name]
            shape, dtype = slot.shape, slot.dtype
        else:
            shape, dtype = t.shape, t.dtype
        try:
            fake[name] = torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        except (AttributeError, RuntimeError, TypeError):
            fake[name] = torch.empty(0, device="meta")
    for name in file_values:
        fake[name] = None
    if ck.torch_metadata is not None:
        fake_sd: Any = type("SD", (dict,), {})(fake)
        fake_sd._metadata = ck.torch_metadata
    else:
        fake_sd = fake
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = info.model.load_state_dict(fake_sd, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except Exception as exc:  # noqa: BLE001 - custom hooks may refuse meta tensors; fall back to key sets
        ck.warnings.append(f"the model's load_state_dict could not run on meta tensors ({type(exc).__name__}); "
                           "the report compares key sets")
        missing = [k for k in info.state_keys if k not in file_tensors and k not in file_values]
        unexpected = [k for k in list(file_tensors) + sorted(file_values) if k not in info.state_keys]
    renamed = _hf_renames(info, unexpected, missing)
    for src, (dst, why) in renamed.items():
        lines.append(ReportLine(src, "renamed", f"differs only by a rename transformers applies on load: {why} "
                                f"gives {dst}", "load with from_pretrained (it renames the key)", blocking=False))
    unexpected = [k for k in unexpected if k not in renamed]
    missing = [k for k in missing if k not in {d for d, _ in renamed.values()}]
    fix = _prefix_fix(unexpected, missing)
    state = set(info.state_keys)
    for key in missing:
        slot = info.slots.get(key)
        if slot is not None and slot.tied_to and slot.tied_to in file_tensors:
            lines.append(ReportLine(key, "missing", f"tied to {slot.tied_to} in this model (one Parameter); the "
                                    "file stores it once under that name, which fills both",
                                    "load with strict=False, or tie after loading"))
        elif key.endswith("num_batches_tracked"):
            lines.append(ReportLine(key, "missing", "BatchNorm batch counter: files from older PyTorch or "
                                    "hand-built state dicts lack it; it only matters for momentum=None",
                                    "load with strict=False (the counter starts at 0)"))
        elif fix and (fix[0] == "--strip-prefix" and any(u == fix[1] + key for u in unexpected)
                      or fix[0] == "--add-prefix" and key.startswith(fix[1]) and key[len(fix[1]):] in unexpected):
            lines.append(ReportLine(key, "missing", f"present in the file under another prefix ({fix[1]!r})",
                                    f"{fix[0]} {fix[1]}"))
        else:
            lines.append(ReportLine(key, "missing", f"the model has this {slot.kind if slot else 'entry'}; "
                                    "the file does not", "train/initialise it, or load with strict=False"))
    for key in unexpected:
        slot = info.slots.get(key)
        if slot is not None and slot.kind == Kind.BUFFER_NP:
            lines.append(ReportLine(key, "unexpected", "a non-persistent buffer in this model, present in the file "
                                    "(written by an older version of the code); the model rebuilds it itself",
                                    "safe to drop: load with strict=False or remove the key"))
        elif fix and (fix[0] == "--strip-prefix" and key[len(fix[1]):] in state and key.startswith(fix[1])
                      or fix[0] == "--add-prefix" and fix[1] + key in state):
            lines.append(ReportLine(key, "unexpected", f"matches a model key after {fix[0]} {fix[1]}",
                                    f"{fix[0]} {fix[1]}"))
        else:
            lines.append(ReportLine(key, "unexpected", "the file has this key; the model has no such "
                                    "parameter or buffer", "remove it, or load with strict=False"))
    return lines


def _hf_renames(info: ModelInfo, unexpected: list[str], missing: list[str]) -> dict[str, tuple[str, str]]:
    """Unexpected keys that become missing ones under transformers' documented renames or its
    base-model prefix handling: {file key: (model key, which rule)}."""
    import re

    out: dict[str, tuple[str, str]] = {}
    want = set(missing)
    for key in unexpected:
        for src, dst in info.renames:
            try:
                new = re.sub(src, dst, key)
            except re.error:
                continue
            if new != key and new in want:
                out[key] = (new, f"{src!r} -> {dst!r}")
                break
        else:
            p = info.base_model_prefix
            if p and key.startswith(p + ".") and key[len(p) + 1:] in want:
                out[key] = (key[len(p) + 1:], f"base-model prefix {p + '.'!r} removed")
            elif p and f"{p}.{key}" in want:
                out[key] = (f"{p}.{key}", f"base-model prefix {p + '.'!r} added")
    return out


def _transformers_renames(model: Any) -> list[tuple[str, str]]:
    """The plain key renames transformers documents for this model (its conversion mapping in 5.x;
    the LayerNorm gamma/beta and weight-norm renames of 4.x otherwise)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping  # type: ignore[import-not-found]

        out = []
        for t in get_model_conversion_mapping(model):
            if type(t).__name__ != "WeightRenaming":
                continue
            for src in t.source_patterns:
                out.append((src, t.target_patterns[0]))
        return out
    except Exception:  # noqa: BLE001 - older transformers: its documented legacy renames
        return [(r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias"),
                (r"\.weight_g$", ".parametrizations.weight.original0"),
                (r"\.weight_v$", ".parametrizations.weight.original1")]


def find_hf_config(path: str) -> str | None:
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    cfg = os.path.join(folder, "config.json")
    return cfg if os.path.isfile(cfg) else None


def build_hf_model(config_path: str) -> ModelInfo:
    """Build a Hugging Face architecture from config.json on meta, with transformers (optional)."""
    try:
        import transformers
    except ImportError as exc:
        raise UsageError(config_path, "classifying against a Hugging Face config needs transformers",
                         "pip install 'statecli[hf]'") from exc
    import torch

    try:
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as exc:
        raise BadInput(config_path, f"unreadable config.json: {exc}") from exc
    archs = raw.get("architectures") if isinstance(raw, dict) else None
    if not archs or not isinstance(archs, list):
        raise UsageError(config_path, "config.json names no architectures")
    cls = getattr(transformers, str(archs[0]), None)
    if cls is None:
        raise UsageError(config_path, f"transformers {transformers.__version__} has no class {archs[0]!r}")
    config = transformers.AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(config_path)))
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls(config)
    info = describe(model, f"{archs[0]} from {config_path}")
    info.renames = _transformers_renames(model)
    info.base_model_prefix = getattr(model, "base_model_prefix", None) or None
    return info
