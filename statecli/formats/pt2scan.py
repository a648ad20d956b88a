"""`scan` of a torch.export archive: every record as torch.export.load reads it (JSON, raw bytes, a
torch.save zip, a pickle, a TorchBind object), AOTInductor shared libraries as native code, and every
member no config names as a finding; the reader (formats/pt2.py) refuses what this reports."""

from __future__ import annotations

import zipfile

from ..errors import BadInput, UnsafeContent
from ..io.source import register_range
from ..pickle.pickles import Context, Findings, GlobalRef, scan_nested, scan_stream
from ..state import Verdict
from .handler import merge
from .pt2layout import AOTI, CONSTANTS, NATIVE, RECORDS, WEIGHTS, AotiWeight, Program, aoti_weights, is_pt2, programs
from .zipcheck import MAGIC, Archive, fold
from .zipscan import scan_duplicates

MAX_MEMBER_SCAN = 1 << 30
NATIVE_CODE, TORCHBIND = "shared library", "torchbind"  # the "opcode" of findings that are no pickle global
NOT_PICKLE = (NATIVE_CODE, TORCHBIND)


def _roles(progs: list[Program], aoti: dict[str, list[AotiWeight]]) -> dict[str, str]:
    """Record (relative to the archive folder) -> how torch.export.load (or AOTInductor's loader) reads it."""
    roles = {r: "record" for r in RECORDS}
    roles.update({w.record: "torch.load" for ws in aoti.values() for w in ws})  # torch.save'd whole tensors
    for prog in progs:
        roles[f"models/{prog.name}.json"] = "json"
        roles[f"{WEIGHTS}{prog.name}_weights_config.json"] = "json"
        roles[f"{CONSTANTS}{prog.name}_constants_config.json"] = "json"
        roles[f"data/sample_inputs/{prog.name}.pt"] = "torch.load"  # weights_only=True, then False on failure
        for p in prog.payloads:
            roles[p.record] = p.loader
    return {fold(k): v for k, v in roles.items()}


def scan_archive(arc: Archive, progs: list[Program], aoti: dict[str, list[AotiWeight]], acc: Findings,
                 verify_crc: bool) -> None:
    roles = _roles(progs, aoti)
    scan_duplicates(arc, acc, Context())
    scan_stream(arc.tail_bytes(), "after the zip end record", acc)
    for name, info in arc.infos.items():
        rel = fold(name[len(arc.prefix):]) if name.startswith(arc.prefix) else None
        role = roles.get(rel or "") if rel is not None else None
        if role is None and rel is not None and (rel.startswith(("extra/", AOTI)) or rel.endswith("/")):
            role = "native" if rel.endswith(NATIVE) else "aoti" if rel.startswith(AOTI) else "record"
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
    acc.problems += arc.problems  # the container's and every CRC mismatch met while reading members


def _scan_member(arc: Archive, name: str, role: str | None, verify_crc: bool, acc: Findings) -> None:
    if role in ("record", "json"):
        arc.member(name)  # CRC checked: a mismatch is a finding
    elif role == "raw":
        if verify_crc:
            before = len(arc.problems)
            arc.check_crc(name)
            acc.errors += [f"corrupt tensor data: {p}" for p in arc.problems[before:]]
            del arc.problems[before:]  # corrupt data (exit 2), not a place a payload hides
    elif role == "native":
        acc.globals.append(GlobalRef(f"native code: {name}", name, NATIVE_CODE, Verdict.NEEDS_TRUST,
                                     "AOTInductor's compiled model: loading the package runs it"))
    elif role == "pickle":
        scan_stream(arc.member(name), name, acc)
    else:  # torch.load, torchbind, aoti and unknown members: whatever their bytes are, as a loader sees them
        if role == "torchbind":
            acc.globals.append(GlobalRef(f"custom object: {name}", name, TORCHBIND, Verdict.NEEDS_TRUST,
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
            scan_file(register_range(arc.path, arc.start(name), info.file_size, name), sub, verify_crc=False)
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
        progs, aoti = [], {}
        try:  # a broken config is an error; every member is still scanned (as never read, then)
            progs, aoti = programs(arc), aoti_weights(arc)
        except BadInput as exc:
            acc.errors.append(exc.problem)
        scan_archive(arc, progs, aoti, acc, verify_crc)
    finally:
        arc.close()


