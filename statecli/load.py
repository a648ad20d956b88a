"""The reader layer: a path becomes a Checkpoint — format read, model state found inside training
wrappers, every entry flattened to a dotted name and classified. Metadata only; no torch."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import classify
from .classify import EMA_KEYS, OPTIMIZER_KEYS
from .errors import BadInput, UnsafeContent, UsageError
from .formats import RawCheckpoint, read_raw
from .formats.quant import regroup
from .io.limits import read_json_file
from .io.urls import is_remote
from .notes import Note, NoteKind
from .pickle.graph import GraphRef, flatten, holds_tensors, render_value, tame_keys
from .pickle.unpickler import DtypeValue, NamedValue, StateDict, StubObject, TensorRef
from .state import (
    PICKLED_MODULE,
    ROOT,
    Checkpoint,
    Container,
    Entry,
    Evidence,
    Format,
    Kind,
    ModuleNode,
    Role,
    Source,
    TensorInfo,
    gc_paused,
)
from .storage import unique_storage_bytes

MODEL_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "model_state",
              "weights", "params", "generator")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def load_checkpoint(path: str, key: str | None = None, strip_prefix: tuple[str, ...] = (),
                    add_prefix: str | None = None) -> Checkpoint:
    """Read `path` (file, sharded index, folder or DCP directory) into a classified Checkpoint.

    Refuses files that reference known-dangerous globals (UnsafeContent); names the other
    non-allowlisted globals in a warning. `key` picks the container holding the model state.
    """
    with gc_paused():  # until the raw tree is gone: the collector then meets only what is kept
        return with_prefix(load_with_raw(path, key, strip_prefix)[0], add_prefix)


def with_prefix(ck: Checkpoint, add_prefix: str | None) -> Checkpoint:
    """`ck` with `add_prefix` before every model-state key (--add-prefix)."""
    if not add_prefix:
        return ck
    return replace(ck, entries=tuple(_renamed(e, add_prefix + e.name) if e.group == "" else e for e in ck.entries))


def load_with_raw(path: str, key: str | None = None,
                  strip_prefix: tuple[str, ...] = ()) -> tuple[Checkpoint, RawCheckpoint]:
    """The Checkpoint and the raw object tree it was built from (rewrite commands need both)."""
    with gc_paused():
        raw = read_raw(path)
        quant_notes = regroup(raw)  # quantized weights as logical tensors, before anything is classified
        if raw.dangerous:  # raw.path: a URL's credentials never reach a message
            raise UnsafeContent(raw.path, "pickle references code that loading would run: " + ", ".join(raw.dangerous),
                                "refusing the file; do not torch.load it (statecli scan shows every global)")
        ck = build(raw, key, strip_prefix).with_notes(Note(NoteKind.LAYOUT, n) for n in quant_notes)
        return _layouts(ck, raw), raw


def _layouts(ck: Checkpoint, raw: RawCheckpoint) -> Checkpoint:
    """Training layouts told by files beside the checkpoint or its own shape: a PEFT adapter
    (adapter_config.json), an accelerate save_state folder, a Lightning .ckpt."""
    note = classify.training_note(ck)
    if note:
        ck = ck.with_notes([Note(NoteKind.LAYOUT, note)])
    if is_remote(raw.path):
        return ck
    folder = os.path.dirname(os.path.abspath(raw.path)) if not os.path.isdir(raw.path) else raw.path
    try:
        names = os.listdir(folder)
    except OSError:
        return ck
    note = classify.folder_note(names, os.path.basename(raw.path))
    if note:
        ck = ck.with_notes([Note(NoteKind.LAYOUT, note)])
    if "adapter_config.json" in names and os.path.basename(raw.path).startswith("adapter_model"):
        try:
            config = read_json_file(os.path.join(folder, "adapter_config.json"))
        except (OSError, ValueError):
            config = None
        if isinstance(config, dict):
            return classify.with_adapter(ck, config)
    return ck


@dataclass
class _Draft:
    """The Checkpoint while build() fills it; frozen into one Checkpoint at the end."""

    path: str
    format: Format
    entries: list[Entry] = field(default_factory=list)
    container: str = ""
    containers: list[Container] = field(default_factory=list)
    unsafe_globals: list[str] = field(default_factory=list)
    messages: list[Note] = field(default_factory=list)
    modules: list[ModuleNode] = field(default_factory=list)
    torch_metadata: Any = None

    @property
    def container_name(self) -> str:
        return self.container or ROOT

    def note(self, text: str, kind: NoteKind = NoteKind.CLASSIFICATION) -> None:
        self.messages.append(Note(kind, text))


def build(raw: RawCheckpoint, key: str | None, strip_prefix: tuple[str, ...]) -> Checkpoint:
    """The classified Checkpoint of a raw tree."""
    ck = _Draft(path=raw.path, format=raw.format, messages=[Note(NoteKind.READER, w) for w in raw.warnings])
    _fill(ck, raw, key, strip_prefix)
    return Checkpoint(path=ck.path, format=ck.format, entries=tuple(ck.entries), container=ck.container,
                      containers=tuple(ck.containers), files=tuple(raw.files), metadata=dict(raw.metadata),
                      unsafe_globals=tuple(ck.unsafe_globals), messages=tuple(ck.messages), modules=tuple(ck.modules),
                      torch_metadata=ck.torch_metadata)


def _fill(ck: _Draft, raw: RawCheckpoint, key: str | None, strip_prefix: tuple[str, ...]) -> None:
    if raw.format is Format.SAFETENSORS and raw.metadata and isinstance(raw.root, Mapping):
        _alias_note(ck, raw.metadata, raw.root)
    if raw.untrusted:
        ck.unsafe_globals = list(raw.untrusted)
        ck.note("torch.load would need weights_only=False: " + ", ".join(raw.untrusted)
                + " (statecli read them as inert stubs; nothing was executed)", NoteKind.UNTRUSTED_GLOBALS)
    root = raw.root
    tame_keys(root)
    if _is_module(root):
        ck.container = PICKLED_MODULE
        _add_module(ck, raw, root, "", "")
        _finish(ck, raw, strip_prefix, {})
        return
    if not isinstance(root, Mapping):
        if isinstance(root, (TensorRef, TensorInfo)):
            ck.entries.append(_tensor_entry(raw, ROOT, root, ""))
            _finish(ck, raw, strip_prefix, {})
            return
        raise BadInput(raw.path, f"holds a {_type_name(root)}, not a state dict or a module")
    choice = _choose_container(raw, root, key)
    ck.container = choice
    roles: dict[str, Role] = {}
    whole = classify.root_role(str(k) for k in root.keys()) if key is None else None
    if whole is not None:  # not a model state at all (a bare optimizer or RNG state file)
        roles[""], kind, evidence = whole
        for name, leaf in _flatten(raw, root, ""):
            if _is_tensor(leaf):
                ck.entries.append(Entry(name, raw.tensor_info(leaf), kind=kind, evidence=evidence))
            else:
                ck.entries.append(_value_entry(name, leaf, ""))
        _finish(ck, raw, strip_prefix, roles)
        return
    model_value = _get_path(root, choice) if choice else root
    top = choice if choice in root else choice.split(".", 1)[0]  # a root key may hold dots (a .pt2's "enc.state_dict")
    if choice:
        roles[top] = Role.MODEL
    if isinstance(model_value, StateDict):
        ck.torch_metadata = model_value.torch_metadata
    if isinstance(model_value, StubObject):
        _add_module(ck, raw, model_value, "", "")
    else:
        # _tensor_entry inlined: this loop runs once per tensor of the model state
        append, tensor_info, infer, known = ck.entries.append, raw.tensor_info, classify.infer, raw.kinds
        for name, leaf in _flatten(raw, model_value, ""):
            if isinstance(leaf, _TENSORS):
                info = tensor_info(leaf)
                kind, ev = known.get(name) or infer(name, info)
                append(Entry(name, info, kind=kind, evidence=ev))
            else:
                append(_value_entry(name, leaf, ""))
    if choice:
        for gname, gvalue in root.items():
            gname = str(gname)
            if gname == top:
                if gname != choice:  # siblings of a nested choice keep their own group
                    _add_group(ck, raw, gname, _strip_path(gvalue, choice.split(".", 1)[1]), roles)
                continue
            _add_group(ck, raw, gname, gvalue, roles)
    _finish(ck, raw, strip_prefix, roles)


def _alias_note(ck: _Draft, meta: Mapping[str, str], root: Mapping[Any, Any]) -> None:
    """Tied keys a safetensors file leaves out (save_model's convention): named as aliases, never as
    stored tensors, with what restores them."""
    from .formats.safetensors import recorded_aliases

    aliases = recorded_aliases(meta, (str(k) for k in root))
    if aliases:
        shown = ", ".join(f"{a} -> {t}" for a, t in list(aliases.items())[:3]) + (", ..." if len(aliases) > 3 else "")
        ck.note(f"{len(aliases)} tied key(s) are aliases, not stored tensors (safetensors.torch.save_model's "
                        f"convention; load_model and from_pretrained re-tie them, plain load_file does not return "
                        f"them): {shown}")


# -- containers ----------------------------------------------------------------------------------

def _choose_container(raw: RawCheckpoint, root: Mapping[Any, Any], key: str | None) -> str:
    if key is not None:
        if key in ("", "."):
            return ""
        value = _get_path(root, key)
        if value is _MISSING:
            opts = ", ".join(repr(str(k)) for k in root.keys() if _holds_tensors(root[k]))
            raise UsageError(raw.path, f"no container {key!r}", f"containers with tensors: {opts or 'none'}")
        if not (isinstance(value, Mapping) or _is_module(value)):
            raise UsageError(raw.path, f"{key!r} holds a {_type_name(value)}, not a state dict")
        return key
    # A wrapper key holding a state dict wins over a stray tensor beside it ({"model": ..., "loss": tensor})
    for cand in MODEL_KEYS + EMA_KEYS:
        if cand in root and (_looks_like_state(root[cand]) or _is_module(root[cand])):
            inner = root[cand]
            # {"model": {"state_dict": {...}}} and similar double wrappers.
            if isinstance(inner, Mapping) and not any(_is_tensor(v) for v in inner.values()):
                for sub in MODEL_KEYS:
                    if sub in inner and (_looks_like_state(inner[sub]) or _is_module(inner[sub])):
                        return f"{cand}.{sub}"
            return cand
    if any(_is_tensor(v) for v in root.values()):
        return ""
    best, best_n = "", 0
    for k, v in root.items():
        if str(k) in OPTIMIZER_KEYS or not isinstance(v, Mapping):
            continue
        n = sum(1 for x in v.values() if _is_tensor(x))
        if n > best_n:
            best, best_n = str(k), n
    return best


def _looks_like_state(value: Any) -> bool:
    return isinstance(value, Mapping) and _holds_tensors(value)


_MISSING = object()


def _get_path(root: Any, dotted: str) -> Any:
    if isinstance(root, Mapping) and dotted in root:
        return root[dotted]
    cur = root
    for part in dotted.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif isinstance(cur, Mapping) and part.isdigit() and int(part) in cur:
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _strip_path(value: Any, dotted: str) -> Any:
    """The mapping `value` without the nested key `dotted` (already shown as the model state)."""
    if not isinstance(value, Mapping):
        return value
    head, _, rest = dotted.partition(".")
    out = {}
    for k, v in value.items():
        if str(k) == head:
            if rest:
                out[k] = _strip_path(v, rest)
            continue
        out[k] = v
    return out


def _add_group(ck: _Draft, raw: RawCheckpoint, gname: str, gvalue: Any, roles: dict[str, Role]) -> None:
    role, tensor_kind = classify.container_role(gname, state_dict=_looks_like_state(gvalue),
                                                tensors=_holds_tensors(gvalue) or _is_module(gvalue))
    roles[gname] = role = raw.roles.get(gname, role)  # the format's word first (a .pt2's constants)
    if isinstance(gvalue, StubObject) and _is_module(gvalue):
        _add_module(ck, raw, gvalue, gname, gname)
        return
    leaves = _flatten(raw, gvalue, gname) if isinstance(gvalue, (Mapping, list, tuple)) else [(gname, gvalue)]
    for name, leaf in leaves:
        if _is_tensor(leaf):
            info = raw.tensor_info(leaf)
            if tensor_kind is not None:
                kind, ev = classify.in_container(name, info, tensor_kind)
            else:
                kind, ev = classify.infer(name, info)
            ck.entries.append(Entry(name=name, tensor=info, kind=kind, evidence=ev, group=gname))
        else:
            ck.entries.append(_value_entry(name, leaf, gname))


def _finish(ck: _Draft, raw: RawCheckpoint, strip_prefix: tuple[str, ...], roles: dict[str, Role]) -> None:
    legacy = raw.format in (Format.TORCH_LEGACY, Format.TORCH_TAR)  # the formats a pre-0.4.1 file can have
    ck.entries = classify.refine(ck.entries, classify.FileFacts.of(ck.torch_metadata, legacy))
    if raw.kinds:  # after the rules: a kind the file records is exact
        ck.entries = [_recorded_kind(ck, raw, e) for e in ck.entries]
    if strip_prefix:
        ck.entries = [_strip(e, strip_prefix) if e.group == "" else e for e in ck.entries]
    names = [e.name for e in ck.entries if e.group == ""]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UsageError(raw.path, f"two entries flatten to the same name {dup!r} (e.g. 'a.b' beside {{'a': {{'b': ...}}}}"
                                   f"{', or after --strip-prefix' if strip_prefix else ''})")
    model = [e for e in ck.entries if e.group == "" and e.tensor is not None]
    for p in WRAPPER_PREFIXES:
        if model and all(e.name.startswith(p) for e in model):
            ck.note(f"every model key starts with {p!r} (a {'DDP/DataParallel' if p == 'module.' else 'torch.compile'} "
                            f"wrapper); add --strip-prefix {p} to see the plain module names")
    refs = {"shared reference": 0, "cycle": 0}
    for e in ck.entries:
        if e.value_type in refs:
            refs[e.value_type] += 1
    if refs["shared reference"]:
        ck.note(f"{refs['shared reference']} key(s) name a container already listed under another name "
                        "(the file shares it by many paths); each is shown once as <shared: same object as ...>")
    if refs["cycle"]:
        ck.note(f"{refs['cycle']} key(s) refer back to a container that holds them (a cycle), shown as "
                        "<cycle: refers back to ...>")
    groups: dict[str, list[Entry]] = {}
    for e in ck.entries:
        groups.setdefault(e.group, []).append(e)
    for g, es in groups.items():
        tensors = [e for e in es if e.tensor is not None]
        role = roles.get("", Role.MODEL) if g == "" else roles.get(g, Role.OTHER)
        name = g or ck.container_name
        ck.containers.append(Container(name=name, role=role, entries=len(es), tensors=len(tensors),
                                       nbytes=unique_storage_bytes(tensors)[1]))
    cuda = sorted({e.tensor.device for e in ck.entries if e.tensor is not None and e.tensor.device.startswith("cuda")})
    if cuda:
        ck.note(f"tensors were saved on {', '.join(cuda)}: torch.load on a CPU-only machine needs "
                        f"map_location='cpu'; or run: statecli move {ck.path} --device cpu -o OUT")


def _recorded_kind(ck: _Draft, raw: RawCheckpoint, e: Entry) -> Entry:
    """`e` with the kind its file records (raw.kinds, by the dotted path from the file's root)."""
    path = f"{ck.container}.{e.name}" if e.group == "" and ck.container and ck.container != PICKLED_MODULE else e.name
    recorded = raw.kinds.get(path)
    return e if recorded is None else replace(e, kind=recorded[0], evidence=recorded[1])


def _strip(e: Entry, prefixes: tuple[str, ...]) -> Entry:
    name = e.name
    for p in prefixes:
        if name.startswith(p):
            name = name[len(p):]
    return _renamed(e, name)


def _renamed(e: Entry, name: str) -> Entry:
    return Entry(name=name, tensor=e.tensor, value=e.value, value_type=e.value_type, kind=e.kind,
                 evidence=e.evidence, group=e.group)


# -- pickled modules -----------------------------------------------------------------------------

def _is_module(obj: Any) -> bool:
    if not isinstance(obj, StubObject):
        return False
    attrs = obj.attrs()
    return "_parameters" in attrs and "_modules" in attrs


def _add_module(ck: _Draft, raw: RawCheckpoint, root: StubObject, prefix: str, group: str) -> None:
    """Exact classification from a pickled nn.Module's own _parameters/_buffers/_non_persistent_buffers_set."""
    stack: list[tuple[str, StubObject]] = [(prefix, root)]
    seen: set[int] = set()
    while stack:
        path, mod = stack.pop(0)
        if id(mod) in seen:
            continue  # a module reachable twice (shared submodule) is listed once, as torch does
        seen.add(id(mod))
        attrs = mod.attrs()
        params = attrs.get("_parameters") or {}
        buffers = attrs.get("_buffers") or {}
        np_set = attrs.get("_non_persistent_buffers_set") or set()
        np_names = {str(n) for n in np_set} if isinstance(np_set, (set, frozenset, list, tuple)) else set()
        node = ModuleNode(path=path, class_name=mod.class_name,
                          parameters=tuple(str(k) for k, v in _items(params) if v is not None),
                          buffers=tuple(str(k) for k, v in _items(buffers) if v is not None),
                          non_persistent=tuple(sorted(np_names)))
        ck.modules.append(node)
        dot = f"{path}." if path else ""
        found = [(k, v, classify.pickled("parameter")) for k, v in _items(params)]
        found += [(k, v, classify.pickled("buffer", str(k) in np_names)) for k, v in _items(buffers)]
        found += [(k, v, classify.pickled("attribute")) for k, v in attrs.items() if not str(k).startswith("_")]
        for k, v, (kind, ev) in found:
            if _is_tensor(v):
                ck.entries.append(Entry(name=dot + str(k), tensor=raw.tensor_info(v), kind=kind, evidence=ev,
                                        group=group))
        for k, v in _items(attrs.get("_modules") or {}):
            if _is_module(v):
                stack.append((dot + str(k), v))


def _items(m: Any) -> list[tuple[Any, Any]]:
    return list(m.items()) if isinstance(m, Mapping) else []


# -- flattening ----------------------------------------------------------------------------------

_TENSORS = (TensorRef, TensorInfo)


def _is_tensor(v: Any) -> bool:
    return isinstance(v, _TENSORS)


def _holds_tensors(v: Any) -> bool:
    return holds_tensors(v)


def _flatten(raw: RawCheckpoint, obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Dotted names for every tensor and every plain value (formats.graph: each object visited once,
    cycles and containers shared past a budget listed as one reference entry)."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, _TENSORS) for v in obj.values()):
        # A plain state dict, what nearly every file is: graph.flatten's answer without its walk.
        return iter([(f"{prefix}.{k}" if prefix else str(k), v) for k, v in obj.items()])
    return iter(flatten(obj, prefix, raw.path))


def _tensor_entry(raw: RawCheckpoint, name: str, leaf: Any, group: str) -> Entry:
    info = raw.tensor_info(leaf)
    kind, ev = classify.infer(name, info)
    return Entry(name=name, tensor=info, kind=kind, evidence=ev, group=group)


def _value_entry(name: str, value: Any, group: str) -> Entry:
    return Entry(name=name, value=render_value(value), value_type=_type_name(value), kind=Kind.METADATA,
                 evidence=Evidence(Source.NOT_TENSOR), group=group)


def _type_name(v: Any) -> str:
    if isinstance(v, StubObject):
        return v.class_name
    if isinstance(v, DtypeValue):
        return "torch.dtype"
    if isinstance(v, NamedValue):
        return "torch enum"
    if isinstance(v, (TensorRef, TensorInfo)):
        return "tensor"
    if isinstance(v, GraphRef):
        return v.type_name
    return type(v).__name__.replace("StateDict", "OrderedDict").replace("InertSet", "set")
