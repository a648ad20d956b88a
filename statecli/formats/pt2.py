"""torch.export archives (`torch.export.save`, AOTInductor packages: `.pt2`), read without torch. The
JSON configs (data/weights/<model>_weights_config.json, data/constants/<model>_constants_config.json)
give every weight's dtype, sizes, strides and raw record; the graph signature in models/<model>.json says
which is a parameter, a buffer (persistent or not) or a constant. Raw records are read in place like a
.pt's storages; every pickle torch.export.load would unpickle is scanned, and the reader refuses what
`scan` reports, as for a .pt."""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BadInput, NotACheckpoint, UnsafeContent
from ..io.limits import load_json
from ..io.source import register_range
from ..pickle.pickles import Context, Findings, GlobalRef, scan_nested, scan_stream
from ..state import Evidence, Format, Kind, Source, TensorInfo, Verdict
from ..units import itemsize
from ._common import RawCheckpoint
from .handler import BaseHandler, merge
from .zipcheck import MAGIC, Archive, fold
from .zipscan import scan_duplicates

REFUSE_HINT = "refusing the file; do not torch.export.load it (statecli scan lists every finding)"
# torch/_export/serde/schema.py: ScalarType and Layout, by number.
_DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32", 8: "float64",
           9: "complex32", 10: "complex64", 11: "complex128", 12: "bool", 13: "bfloat16", 28: "uint16",
           29: "float8_e4m3fn", 30: "float8_e5m2", 31: "float8_e4m3fnuz", 32: "float8_e5m2fnuz",
           33: "float8_e8m0fnu", 34: "uint32", 35: "uint64"}
_LAYOUTS = {1: "sparse_coo", 2: "sparse_csr", 3: "sparse_csc", 4: "sparse_bsr", 5: "sparse_bsc", 6: "_mkldnn",
            7: "strided"}
# Records torch.export.save writes besides the models, configs and payloads; extra/ holds text files.
_RECORDS = frozenset({"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"})
_NATIVE = (".so", ".dll", ".dylib", ".pyd")  # AOTInductor's compiled model: loading the package runs it
_WEIGHTS, _CONSTANTS, _AOTI = "data/weights/", "data/constants/", "data/aotinductor/"
MAX_MEMBER_SCAN = 1 << 30
# The records a .pt2 may start with (torch.export.save writes weights first, a package may start anywhere).
_FIRST_RECORDS = ("data/", "models/", "archive_format", "archive_version", "extra/", "byteorder", ".data/",
                  "xl_model_weights/")


@dataclass(frozen=True)
class Payload:
    """One entry of a weights or constants config: where torch.export.load finds the value of `fqn`."""

    fqn: str
    record: str  # "data/weights/weight_0", relative to the archive folder
    is_param: bool
    use_pickle: bool
    meta: dict[str, Any] | None

    @property
    def loader(self) -> str:
        """How torch.export.load reads the record (torch/export/pt2_archive/_package.py)."""
        name = self.record.rsplit("/", 1)[1]
        if name.startswith("custom_obj_"):
            return "torchbind"  # torch._C._pickle_load_obj: TorchScript's unpickler, the class's __setstate__
        if name.startswith("opaque_obj_"):
            return "pickle"  # pickle.loads
        return "torch.load" if self.use_pickle else "raw"  # torch.load(weights_only=False) / raw bytes


@dataclass(frozen=True)
class Program:
    """One exported program of the archive (models/<name>.json and its two configs)."""

    name: str
    kinds: dict[str, tuple[Kind, Evidence]]
    payloads: tuple[Payload, ...]
    constants: frozenset[str]  # fqns from the constants config (not in ep.state_dict)


@dataclass(frozen=True)
class CustomObject:
    """A constant that is no tensor (a TorchBind script object or an opaque Python object)."""

    record: str
    loader: str

    def __repr__(self) -> str:
        what = "TorchBind script object" if self.loader == "torchbind" else "pickled Python object"
        return f"<custom object {self.record}: {what}>"


def is_pt2(arc: Archive) -> bool:
    name = arc.lookup("archive_format")
    return name is not None and arc.member(name, 16).strip() == b"pt2"


def programs(arc: Archive) -> list[Program]:
    """Every exported program, in name order."""
    names = sorted(n[len(arc.prefix) + 7:-5] for n in arc.infos
                   if n.startswith(arc.prefix + "models/") and n.endswith(".json") and "/" not in n[len(arc.prefix) + 7:])
    return [_program(arc, name) for name in names]


def _json(arc: Archive, rel: str) -> Any:
    name = arc.lookup(rel)
    if name is None:
        return None
    try:
        return load_json(arc.member(name))
    except ValueError as exc:
        raise BadInput(arc.path, f"{rel} is not valid JSON: {exc}") from exc


def _program(arc: Archive, name: str) -> Program:
    doc = _json(arc, f"models/{name}.json")
    specs = _get(doc, ("graph_module", "signature", "input_specs"), list, arc.path, f"models/{name}.json")
    kinds: dict[str, tuple[Kind, Evidence]] = {}
    for spec in specs:
        kind = _spec_kind(spec)
        if kind is not None:
            kinds[kind[0]] = kind[1:]
    weights = _config(arc, f"{_WEIGHTS}{name}_weights_config.json", _WEIGHTS)
    constants = _config(arc, f"{_CONSTANTS}{name}_constants_config.json", _CONSTANTS)
    return Program(name, kinds, tuple(weights + constants), frozenset(p.fqn for p in constants))


def _spec_kind(spec: Any) -> tuple[str, Kind, Evidence] | None:
    """(fqn, kind, evidence) of one input spec of the graph signature; None for user inputs and tokens."""
    if not isinstance(spec, dict) or len(spec) != 1:
        return None
    (what, body), = spec.items()
    if not isinstance(body, dict):
        return None
    fields = {"parameter": ("parameter_name", Kind.PARAMETER, ""),
              "tensor_constant": ("tensor_constant_name", Kind.CONSTANT, "lifted tensor constant"),
              "custom_obj": ("custom_obj_name", Kind.CONSTANT, "custom object")}
    if what == "buffer":
        kind = Kind.BUFFER if body.get("persistent", True) is not False else Kind.BUFFER_NP
        fqn = body.get("buffer_name")
        return (fqn, kind, Evidence(Source.EXPORT)) if isinstance(fqn, str) else None
    if what not in fields:
        return None
    key, kind, detail = fields[what]
    fqn = body.get(key)
    return (fqn, kind, Evidence(Source.EXPORT, detail)) if isinstance(fqn, str) else None


def _get(doc: Any, keys: tuple[str, ...], typ: type, path: str, where: str) -> Any:
    for k in keys:
        doc = doc.get(k) if isinstance(doc, dict) else None
    if not isinstance(doc, typ):
        raise BadInput(path, f"{where} has no {'.'.join(keys)} {typ.__name__}: not a torch.export archive")
    return doc


def _config(arc: Archive, rel: str, folder: str) -> list[Payload]:
    doc = _json(arc, rel)
    if doc is None:
        raise BadInput(arc.path, f"torch.export archive has no {rel}", "statecli reads archives of torch >= 2.7 "
                                                                     "(older ones keep weights in a pickle)")
    out = []
    for fqn, p in _get(doc, ("config",), dict, arc.path, rel).items():
        name = p.get("path_name") if isinstance(p, dict) else None
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            raise BadInput(arc.path, f"{rel}: entry {fqn!r} names no plain record (path_name {name!r})")
        meta = p.get("tensor_meta")
        flags = (p.get("is_param", False), p.get("use_pickle", False))
        if not all(isinstance(f, bool) for f in flags) or not isinstance(meta, (dict, type(None))):
            raise BadInput(arc.path, f"{rel}: entry {fqn!r} is malformed")
        out.append(Payload(fqn, folder + name, flags[0], flags[1], meta))
    return out


def _ints(value: Any, what: str, path: str, fqn: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise BadInput(path, f"{fqn}: {what} is not a list")
    out = tuple(v.get("as_int") if isinstance(v, dict) else None for v in value)
    if not all(type(v) is int and 0 <= v < 1 << 62 for v in out):
        raise BadInput(path, f"{fqn}: {what} {value!r:.80} holds a symbolic or impossible value")
    return out  # type: ignore[return-value]  # checked above: every item an int


def _tensor(arc: Archive, p: Payload) -> TensorInfo:
    """The TensorInfo of a payload with tensor_meta; a raw record checked against its view, as torch's
    as_strided would (the record read in place by io/values)."""
    meta, path = p.meta or {}, arc.path
    dtype, layout = _DTYPES.get(meta.get("dtype", 0)), _LAYOUTS.get(meta.get("layout", 7), "strided")
    if dtype is None:
        raise BadInput(path, f"{p.fqn}: unknown dtype number {meta.get('dtype')!r:.20}")
    shape = _ints(meta.get("sizes"), "sizes", path, p.fqn)
    stride = _ints(meta.get("strides"), "strides", path, p.fqn)
    (offset,) = _ints([meta.get("storage_offset")], "storage_offset", path, p.fqn)
    dev: dict[str, Any] = meta["device"] if isinstance(meta.get("device"), dict) else {}
    device = str(dev.get("type", "cpu")) + (f":{dev['index']}" if type(dev.get("index")) is int else "")
    if len(stride) != len(shape):
        raise BadInput(path, f"{p.fqn}: {len(shape)} sizes but {len(stride)} strides")
    member = arc.lookup(p.record)
    if member is None:
        raise BadInput(path, f"{p.fqn}: the archive has no record {p.record!r}")
    info = arc.infos[member]
    source, data_offset, nbytes = path, None, None
    if p.loader == "raw":
        if info.compress_type != zipfile.ZIP_STORED:
            raise BadInput(path, f"record {p.record!r} is compressed; torch.export.save stores weights uncompressed")
        nbytes, size = info.file_size, itemsize(dtype)
        numel = math.prod(shape)
        need = offset + sum((s - 1) * st for s, st in zip(shape, stride)) + 1 if numel else 0
        if nbytes % size or need * size > nbytes:
            raise BadInput(path, f"{p.fqn}: a {list(shape)} view at offset {offset} needs {need * size} bytes of "
                                 f"{dtype} but record {p.record!r} holds {nbytes}")
        data_offset = arc.offsets[member]
    elif p.loader == "torch.load" and info.compress_type == zipfile.ZIP_STORED:
        return _pickled(arc, p, member) or _pickled_stub(p, dtype, shape, device, layout, stride, offset)
    return TensorInfo(dtype=dtype, shape=shape, device=device, layout=layout, stride=stride, storage_offset=offset,
                      storage_key=p.record, storage_nbytes=nbytes, storage_dtype=dtype, source=source,
                      data_offset=data_offset, requires_grad=meta.get("requires_grad") is True,
                      is_parameter_object=p.is_param, subclass=None if p.loader == "raw" else "pickled")


def _pickled(arc: Archive, p: Payload, member: str) -> TensorInfo | None:
    """A weight torch.export.save pickled (torch.save of the tensor, for subclasses): read through the
    no-execution reader as the file torch.load would read; a plain strided tensor's bytes are then at a
    known offset of this file (the member is stored), so its values read in place like a raw record."""
    from ..pickle.unpickler import TensorRef
    from .torchzip import read as read_zip

    start = arc.offsets[member]
    sub = read_zip(register_range(arc.path, start, arc.infos[member].file_size, member))
    root = sub.root
    if not isinstance(root, TensorRef) or root.subclass is not None or root.layout != "strided":
        return None
    t = sub.tensor_info(root)
    if t.data_offset is None:
        return None
    return replace(t, source=arc.path, data_offset=start + t.data_offset, storage_key=f"{p.record}:{t.storage_key}",
                   is_parameter_object=p.is_param)


def _pickled_stub(p: Payload, dtype: str, shape: tuple[int, ...], device: str, layout: str,
                  stride: tuple[int, ...], offset: int) -> TensorInfo:
    """A pickled tensor subclass: listed from its tensor_meta; its values are the subclass's to say."""
    return TensorInfo(dtype=dtype, shape=shape, device=device, layout=layout, stride=stride, storage_offset=offset,
                      storage_key=p.record, is_parameter_object=p.is_param, subclass="tensor subclass (pickled)")


def read(path: str) -> RawCheckpoint:
    arc = Archive(path, anchor="archive_format")
    try:
        return _read(arc)
    finally:
        arc.close()


def _read(arc: Archive) -> RawCheckpoint:
    if not is_pt2(arc):
        raise BadInput(arc.path, "a zip with an archive_format record that is not 'pt2'")
    progs = programs(arc)
    acc = Findings()
    _scan_archive(arc, progs, acc, verify_crc=False)
    problems = ([f"pickle references code that loading would run: {', '.join(acc.dangerous)}"] if acc.dangerous
                else []) + acc.problems
    if problems:
        raise UnsafeContent(arc.path, problems[0], REFUSE_HINT)
    if acc.errors:
        raise BadInput(arc.path, acc.errors[0])
    several = len(progs) > 1
    root: dict[str, Any] = {}
    raw = RawCheckpoint(path=arc.path, format=Format.PT2, root=root, files=[arc.path])
    raw.untrusted = list(dict.fromkeys(g.name for g in acc.globals if g.verdict is Verdict.NEEDS_TRUST))
    for prog in progs:
        # As torch.export.load gives them: ep.state_dict (parameters, persistent buffers: the model state
        # a rewrite writes) and ep.constants (non-persistent buffers, lifted constants, custom objects).
        # Several programs: one top-level key per program and part ("enc.state_dict"), so --key names one.
        dot = f"{prog.name}." if several else ""
        for p in prog.payloads:
            group = dot + ("constants" if p.fqn in prog.constants else "state_dict")
            root.setdefault(group, {})[p.fqn] = _tensor(arc, p) if p.meta is not None else CustomObject(p.record, p.loader)
            if p.fqn in prog.kinds:
                raw.kinds[f"{group}.{p.fqn}"] = prog.kinds[p.fqn]
            elif p.meta is None:  # a custom object the signature does not name: still no tensor to write
                raw.kinds[f"{group}.{p.fqn}"] = (Kind.CONSTANT, Evidence(Source.EXPORT, "custom object"))
    raw.metadata = {"models": ", ".join(p.name for p in progs)} if several else {}
    if several:
        raw.warnings.append(f"{len(progs)} exported programs in one archive ({', '.join(p.name for p in progs)}); "
                            "--key <name>.state_dict chooses the one shown as the model state")
    aoti = [n for n in arc.infos if fold(n).endswith(_NATIVE)]
    if aoti:
        raw.warnings.append(f"an AOTInductor package: {len(aoti)} compiled shared librar(ies) run when it loads "
                            f"({', '.join(aoti[:3])}); statecli read its weights as data")
    return raw


# -- scan ------------------------------------------------------------------------------------------

def _roles(progs: list[Program]) -> dict[str, str]:
    """Record (relative to the archive folder) -> how torch.export.load reads it."""
    roles = {r: "record" for r in _RECORDS}
    for prog in progs:
        roles[f"models/{prog.name}.json"] = "json"
        roles[f"{_WEIGHTS}{prog.name}_weights_config.json"] = "json"
        roles[f"{_CONSTANTS}{prog.name}_constants_config.json"] = "json"
        roles[f"data/sample_inputs/{prog.name}.pt"] = "torch.load"  # weights_only=True, then False on failure
        for p in prog.payloads:
            roles[p.record] = p.loader
    return {fold(k): v for k, v in roles.items()}


def _scan_archive(arc: Archive, progs: list[Program], acc: Findings, verify_crc: bool) -> None:
    acc.problems += arc.problems
    roles = _roles(progs)
    scan_duplicates(arc, acc, Context())
    scan_stream(arc.tail_bytes(), "after the zip end record", acc)
    for name, info in arc.infos.items():
        rel = fold(name[len(arc.prefix):]) if name.startswith(arc.prefix) else None
        role = roles.get(rel or "") if rel is not None else None
        if role is None and rel is not None and (rel.startswith(("extra/", _AOTI)) or rel.endswith("/")):
            role = "native" if rel.endswith(_NATIVE) else "aoti" if rel.startswith(_AOTI) else "record"
        if role is None:
            acc.problems.append(f"zip member {name!r} is never read by torch.export.load")
        if info.file_size > MAX_MEMBER_SCAN:
            if role not in ("raw", "native"):
                acc.problems.append(f"zip member {name!r} declares {info.file_size} bytes, over the scan cap")
            continue
        try:
            _scan_member(arc, name, role, verify_crc, acc)
        except UnsafeContent as exc:  # a compression bomb: the other members are still scanned
            acc.problems.append(exc.problem)
        except BadInput as exc:
            acc.errors.append(exc.problem)


def _scan_member(arc: Archive, name: str, role: str | None, verify_crc: bool, acc: Findings) -> None:
    if role in ("record", "json"):
        arc.member(name)  # CRC checked: a mismatch is a finding
    elif role == "raw":
        if verify_crc:
            before = len(arc.problems)
            arc.check_crc(name)
            acc.errors += [f"corrupt tensor data: {p}" for p in arc.problems[before:]]
    elif role == "native":
        acc.code.append(name)
        acc.globals.append(GlobalRef(f"native code: {name}", name, "shared library", Verdict.NEEDS_TRUST,
                                     "AOTInductor's compiled model: loading the package runs it"))
    elif role == "pickle":
        scan_stream(arc.member(name), name, acc)
    else:  # torch.load, torchbind, aoti and unknown members: whatever their bytes are, as a loader sees them
        if role == "torchbind":
            acc.globals.append(GlobalRef(f"custom object: {name}", name, "torchbind", Verdict.NEEDS_TRUST,
                                         "a TorchBind class's __setstate__ runs when the archive loads"))
        _scan_nested_file(arc, name, acc)


def _scan_nested_file(arc: Archive, name: str, acc: Findings) -> None:
    """A member that is a file of its own (a torch.save zip, a pickle): scanned as that file, read in
    place when stored; other bytes for pickles nested anywhere in them."""
    from . import scan_file

    info = arc.infos[name]
    head = arc.member(name, 8) if info.compress_type == zipfile.ZIP_STORED else b""
    if info.compress_type == zipfile.ZIP_STORED and head.startswith(MAGIC):
        sub = Findings()
        try:
            scan_file(register_range(arc.path, arc.offsets[name], info.file_size, name), sub, verify_crc=False)
        except (BadInput, UnsafeContent) as exc:
            sub.errors.append(exc.problem)
        merge(acc, sub, name)
        return
    data = arc.member(name, any_method=True)
    if data[:1] == b"\x80":
        scan_stream(data, name, acc)
    else:
        scan_nested(data, name, acc)


def scan(path: str, acc: Findings, verify_crc: bool = True) -> None:
    arc = Archive(path, anchor="archive_format")
    try:
        if not is_pt2(arc):
            raise BadInput(path, "a zip with an archive_format record that is not 'pt2'")
        try:
            progs = programs(arc)
        except BadInput as exc:
            acc.errors.append(exc.problem)
            progs = []
        _scan_archive(arc, progs, acc, verify_crc)
    finally:
        arc.close()


class Pt2Handler(BaseHandler):
    """torch.export archives. Asked before the torch zip handler: a zip whose first record is one
    torch.export.save writes (torch.save writes data.pkl first) is taken for a .pt2; one with no
    archive_format record goes on to the torch zip handler all the same, which refuses or reads it."""

    format = Format.PT2

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        if not head.startswith(MAGIC) or len(head) < 30:
            return False
        first = fold(head[30:30 + int.from_bytes(head[26:28], "little")].decode("utf-8", "replace"))
        return "/" in first and first.split("/", 1)[1].startswith(_FIRST_RECORDS)

    def read(self, source: str) -> RawCheckpoint:
        from .torchzip import HANDLER as TORCH_ZIP

        try:
            return read(source)
        except NotACheckpoint:
            return TORCH_ZIP.read(source)

    def scan(self, source: str, findings: Findings, verify_crc: bool = True) -> Format:
        from .torchzip import HANDLER as TORCH_ZIP

        try:
            scan(source, findings, verify_crc)
        except NotACheckpoint:
            return TORCH_ZIP.scan(source, findings, verify_crc)
        return Format.PT2


HANDLER = Pt2Handler()
