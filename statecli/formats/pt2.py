"""torch.export archives (`torch.export.save`, AOTInductor packages: `.pt2`), read without torch. The
JSON configs (data/weights/<model>_weights_config.json, data/constants/<model>_constants_config.json)
give every weight's dtype, sizes, strides and raw record; the graph signature in models/<model>.json says
which is a parameter, a buffer (persistent or not) or a constant. Raw records are read in place like a
.pt's storages; every pickle torch.export.load would unpickle is scanned, and the reader refuses what
`scan` reports, as for a .pt."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BadInput, NotACheckpoint, UnsafeContent
from ..io.source import register_range
from ..pickle.pickles import Findings
from ..state import Evidence, Format, Kind, Role, Source, TensorInfo, Verdict
from ..units import itemsize
from ..vocab import Layout
from ._common import RawCheckpoint
from .handler import BaseHandler
from .pt2layout import DTYPES, FIRST_RECORDS, LAYOUTS, NATIVE, AotiWeight, Payload, Program, aoti_weights, is_pt2, programs
from .pt2scan import NOT_PICKLE, scan, scan_archive
from .zipcheck import MAGIC, Archive, fold

REFUSE_HINT = "refusing the file; do not torch.export.load it (statecli scan lists every finding)"

@dataclass(frozen=True)
class CustomObject:
    """A constant that is no tensor (a TorchBind script object or an opaque Python object)."""

    record: str
    loader: str

    def __repr__(self) -> str:
        what = "TorchBind script object" if self.loader == "torchbind" else "pickled Python object"
        return f"<custom object {self.record}: {what}>"



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
    dtype, layout = DTYPES.get(meta.get("dtype", 0)), LAYOUTS.get(meta.get("layout", 7), "strided")
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
        if nbytes % size:
            raise BadInput(path, f"record {p.record!r} holds {nbytes} bytes: no whole number of {dtype} elements")
        _check_view(path, p.fqn, TensorInfo(dtype=dtype, shape=shape, stride=stride, storage_offset=offset),
                    nbytes // size)
        data_offset = arc.start(member)
    elif p.loader == "torch.load" and info.compress_type == zipfile.ZIP_STORED:
        return _pickled(arc, p, member) or _pickled_stub(p, dtype, shape, device, layout, stride, offset)
    return TensorInfo(dtype=dtype, shape=shape, device=device, layout=layout, stride=stride, storage_offset=offset,
                      storage_key=p.record, storage_nbytes=nbytes, storage_dtype=dtype, source=source,
                      data_offset=data_offset, requires_grad=meta.get("requires_grad") is True,
                      is_parameter_object=p.is_param, subclass=None if p.loader == "raw" else "pickled")


def _check_view(path: str, name: str, t: TensorInfo, numel: int) -> None:
    """A view within its storage of `numel` elements, as torch's as_strided checks it."""
    need = t.storage_offset + sum((s - 1) * st for s, st in zip(t.shape, t.stride or ())) + 1 if t.numel else 0
    if len(t.stride or ()) != len(t.shape) or need > numel:
        raise BadInput(path, f"{name}: a {list(t.shape)} view at offset {t.storage_offset} needs {need} elements of "
                             f"{t.dtype}, its storage holds {numel}")


def _pickled(arc: Archive, p: Payload, member: str) -> TensorInfo | None:
    """A weight torch.export.save pickled (torch.save of the tensor, for subclasses): read through the
    no-execution reader as the file torch.load would read; a plain strided tensor's bytes are then at a
    known offset of this file (the member is stored), so its values read in place like a raw record."""
    from ..pickle.unpickler import TensorRef
    from .torchzip import read as read_zip

    start = arc.start(member)
    sub = read_zip(register_range(arc.path, start, arc.infos[member].file_size, member))
    root = sub.root
    if not isinstance(root, TensorRef) or root.subclass is not None or root.layout != Layout.STRIDED:
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
    progs, aoti = programs(arc), aoti_weights(arc)
    acc = Findings()
    scan_archive(arc, progs, aoti, acc, verify_crc=False)
    problems = ([f"pickle references code that loading would run: {', '.join(acc.dangerous)}"] if acc.dangerous
                else []) + acc.problems
    if problems:
        raise UnsafeContent(arc.path, problems[0], REFUSE_HINT)
    if acc.errors:
        raise BadInput(arc.path, acc.errors[0])
    raw = RawCheckpoint(path=arc.path, format=Format.PT2, root={}, files=[arc.path])
    order = arc.lookup("byteorder")
    raw.byteorder = arc.member(order, 16).decode("ascii", "replace").strip() if order else "little"
    if raw.byteorder not in ("little", "big"):
        raise BadInput(arc.path, f"unknown byteorder record {raw.byteorder!r}")
    if raw.byteorder == "big":
        raw.warnings.append("tensors were saved big-endian; values read by statecli are not byte-swapped")
    # Globals of the pickles read (a torch.load fallback would need them); native code is said below.
    raw.untrusted = list(dict.fromkeys(g.name for g in acc.globals
                                       if g.verdict is Verdict.NEEDS_TRUST and g.opcode not in NOT_PICKLE))
    _add_programs(arc, progs, raw)
    for model, weights in aoti.items():
        key = f"aotinductor.{model}"  # a compiled model's own weights: views of torch.save'd tensors
        raw.root[key] = {w.name: _aoti_tensor(arc, w) for w in weights}
    native = [n for n in arc.infos if fold(n).endswith(NATIVE)]
    if native:
        raw.warnings.append(f"an AOTInductor package: {len(native)} compiled shared librar(ies) run when it loads "
                            f"({', '.join(native[:3])}); statecli lists the weights the package keeps outside them")
    return raw


def _add_programs(arc: Archive, progs: list[Program], raw: RawCheckpoint) -> None:
    """Each program as torch.export.load gives it: ep.state_dict (parameters, persistent buffers: the
    model state a rewrite writes) and ep.constants (non-persistent buffers, lifted constants, custom
    objects). Several programs: one top-level key per program and part ("enc.state_dict"), so --key
    names one."""
    several = len(progs) > 1
    for prog in progs:
        dot = f"{prog.name}." if several else ""
        for p in prog.payloads:
            group = dot + ("constants" if p.fqn in prog.constants else "state_dict")
            if p.fqn in prog.constants:
                raw.roles[group] = Role.CONSTANTS
            raw.root.setdefault(group, {})[p.fqn] = (_tensor(arc, p) if p.meta is not None
                                                     else CustomObject(p.record, p.loader))
            if p.fqn in prog.kinds:
                raw.kinds[f"{group}.{p.fqn}"] = prog.kinds[p.fqn]
            elif p.meta is None:  # a custom object the signature does not name: still no tensor to write
                raw.kinds[f"{group}.{p.fqn}"] = (Kind.CONSTANT, Evidence(Source.EXPORT, "custom object"))
    if several:
        raw.metadata = {"models": ", ".join(p.name for p in progs)}
        raw.warnings.append(f"{len(progs)} exported programs in one archive ({', '.join(p.name for p in progs)}); "
                            "--key <name>.state_dict chooses the one shown as the model state")


def _aoti_tensor(arc: Archive, w: AotiWeight) -> TensorInfo:
    member = arc.lookup(w.record)
    info = arc.infos[member] if member is not None else None
    if member is None or info is None or info.compress_type != zipfile.ZIP_STORED:
        raise BadInput(arc.path, f"AOTInductor weight {w.name!r}: no stored record {w.record!r}")
    whole = _pickled(arc, Payload(w.name, w.record, False, True, None), member)
    if whole is None:
        raise BadInput(arc.path, f"AOTInductor weight {w.name!r}: {w.record!r} holds no plain tensor")
    view = replace(whole, shape=w.shape, stride=w.stride, storage_offset=w.offset)
    _check_view(arc.path, w.name, view, (whole.storage_nbytes or 0) // max(itemsize(view.dtype), 1))
    return view


class Pt2Handler(BaseHandler):
    """torch.export archives. Asked before the torch zip handler: a zip whose first record is one
    torch.export.save writes (torch.save writes data.pkl first) is taken for a .pt2; one with no
    archive_format record goes on to the torch zip handler all the same, which refuses or reads it."""

    format = Format.PT2

    def detect(self, head: bytes, name: str, is_folder: bool) -> bool:
        if not head.startswith(MAGIC) or len(head) < 30:
            return False
        first = fold(head[30:30 + int.from_bytes(head[26:28], "little")].decode("utf-8", "replace"))
        return "/" in first and first.split("/", 1)[1].startswith(FIRST_RECORDS)

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

