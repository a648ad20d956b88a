"""`statecli scan`: every global each pickle of a checkpoint resolves (read by the C unpickler with
inert stubs, as the loader reads it, plus a static walk for opcodes, calls and nested pickles), every
container finding, one verdict per file. Nothing is executed; the container checks, the pickle
reading and the verdicts are the formats layer's, so `scan` and the loader agree."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import StatecliError, UnsafeContent
from ..formats import detect_format, expand_paths, resolve_path
from ..formats._common import open_regular
from ..formats.pickles import Context, Findings, GlobalRef, scan_nested, scan_stream
from ..formats.urls import is_remote
from ..formats.verdict import DCP_TRUSTED_PREFIXES
from ..state import SCHEMA_VERSION, Verdict

SAFE, NEEDS_TRUST, DANGEROUS, MALFORMED = Verdict.SAFE, Verdict.NEEDS_TRUST, Verdict.DANGEROUS, Verdict.MALFORMED
MAX_PICKLE_SCAN = 1 << 30
__all__ = ["GlobalRef", "ScanReport", "ScanResult", "scan", "scan_paths"]


@dataclass(frozen=True)
class ScanResult:
    """One file's scan. `problems` are findings (a place a payload hides: exit 3); `errors` mean
    the file is unreadable or not a checkpoint (exit 2) unless a finding outranks them."""

    path: str
    format: str
    globals: tuple[GlobalRef, ...] = ()
    calls: tuple[tuple[str, str, str], ...] = ()  # (opcode, callee, where)
    problems: tuple[str, ...] = ()
    pickles: int = 0
    errors: tuple[str, ...] = ()

    @property
    def verdict(self) -> Verdict:
        worst = max((g.verdict for g in self.globals), key=lambda v: v.rank, default=SAFE)
        if worst is DANGEROUS:
            return DANGEROUS
        return MALFORMED if self.problems or self.errors else worst

    @property
    def error(self) -> str | None:
        """Why the file could not be read as a checkpoint ("not a checkpoint (looks like a PNG image)")."""
        return self.errors[0] if self.errors else None

    @property
    def exit_code(self) -> int:
        v = self.verdict
        if v is DANGEROUS or self.problems:
            return 3
        if self.errors:
            return 2
        return 1 if v is NEEDS_TRUST else 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "verdict": str(self.verdict), "pickles": self.pickles,
                "globals": [{"name": g.name, "verdict": str(g.verdict), "where": g.where, "opcode": g.opcode}
                            | ({"detail": g.detail} if g.detail else {}) for g in self.globals],
                "calls": [{"opcode": o, "callee": c, "where": w} for o, c, w in self.calls],
                "problems": list(self.problems), "error": self.error, "exit_code": self.exit_code}

    def rows(self) -> list[dict[str, Any]]:
        return [{"path": self.path, "name": g.name, "verdict": str(g.verdict), "where": g.where, "opcode": g.opcode}
                for g in self.globals]


_SEVERITY = {0: 0, 1: 1, 2: 2, 3: 3}


@dataclass(frozen=True)
class ScanReport:
    """Several files: exit 3 if any finding, else 2 if any unreadable, else 1 if any needs trust."""

    files: tuple[ScanResult, ...] = field(default_factory=tuple)

    @property
    def exit_code(self) -> int:
        return max((r.exit_code for r in self.files), key=_SEVERITY.__getitem__, default=0)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "files": [r.to_dict() for r in self.files]}

    def rows(self) -> list[dict[str, Any]]:
        return [row for r in self.files for row in r.rows()]


def scan_paths(paths: list[str]) -> ScanReport:
    """Scan every checkpoint named (a folder: every checkpoint below it)."""
    # A remote file's tensor bytes are not fetched to check CRCs (that would download all of it): the
    # pickles, the container checks and every finding are the same, read by range requests.
    return ScanReport(tuple(scan(p, verify_crc=not is_remote(p)) for p in expand_paths(paths)))


def _result(path: str, fmt: str, acc: Findings) -> ScanResult:
    return ScanResult(path, fmt, tuple(acc.globals), tuple(acc.calls), tuple(dict.fromkeys(acc.problems)),
                      acc.pickles, tuple(dict.fromkeys(acc.errors)))


def scan(path: str, verify_crc: bool = True) -> ScanResult:
    """Scan one checkpoint (file, sharded folder or DCP directory). `verify_crc` reads every zip
    member to check its CRC (the whole file); without it only the pickles are read."""
    acc = Findings()
    fmt = ""
    try:
        target = resolve_path(path)
        if os.path.isdir(target):
            with open_regular(os.path.join(target, ".metadata")) as f:
                scan_stream(f, ".metadata", acc, Context(DCP_TRUSTED_PREFIXES + ("pathlib.",)))
            return _result(path, "torch.distributed.checkpoint", acc)
        if target.endswith(".index.json"):
            return _scan_sharded(path, target, verify_crc)
        with open_regular(target) as f:
            head = f.read(512)
        kind = detect_format(target, head)
        fmt = {"zip": "torch zip", "safetensors": "safetensors", "pickle": "pickle", "tar": "torch tar (pre-0.4)",
               "npy": "numpy array"}[kind]
        if kind == "zip":
            fmt = _scan_zip(target, acc, verify_crc)
        elif kind == "safetensors":
            from ..formats import safetensors as st

            st.read(target)
        elif kind == "pickle":
            fmt = _scan_pickles(target, acc)
        elif kind == "tar":
            _scan_tar(target, acc)
        else:
            _scan_npy(target, acc)
    except UnsafeContent as exc:  # a finding met while reading (a compression bomb): exit 3, as the readers
        acc.problems.append(exc.problem)
    except StatecliError as exc:
        acc.errors.append(exc.problem)
    return _result(path, fmt, acc)


def _scan_sharded(path: str, target: str, verify_crc: bool) -> ScanResult:
    from ..formats.sharded import read_index, shard_problem

    wmap, _ = read_index(target)
    acc = Findings()
    folder = os.path.dirname(os.path.abspath(target))
    local, missing = not is_remote(target), []
    for shard in sorted(set(wmap.values())):
        problem = shard_problem(target, shard)
        if problem:
            acc.problems.append(problem)
            continue
        if local and not os.path.isfile(os.path.join(folder, shard)):
            missing.append(shard)  # one line for all of them: an index may name a million
            continue
        sub = scan(os.path.join(folder, shard), verify_crc)
        acc.globals += [GlobalRef(g.name, f"{shard}: {g.where}", g.opcode, g.verdict, g.detail) for g in sub.globals]
        acc.calls += list(sub.calls)
        acc.problems += [f"{shard}: {p}" for p in sub.problems]
        acc.errors += [f"{shard}: {p}" for p in sub.errors]
        acc.pickles += sub.pickles
    if missing:
        acc.errors.append(f"weight_map names {len(missing)} shard file(s) that do not exist, e.g. {missing[0]!r}")
    return _result(path, "sharded", acc)


def _scan_zip(target: str, acc: Findings, verify_crc: bool) -> str:
    from ..errors import BadInput
    from ..formats import npy
    from ..formats.limits import Inflation, read_zip_member
    from ..formats.torchzip import trailing_findings
    from ..formats.zipcheck import Archive

    try:
        arc = Archive(target)
    except BadInput as exc:
        if exc.problem.startswith("not a checkpoint") and npy.scan_zip(target, acc):
            return "numpy npz"
        raise
    try:
        acc.problems += arc.problems
        ctx = Context(torchscript=arc.torchscript)
        pkl = arc.prefix + "data.pkl"
        broken = False
        if pkl in arc.infos:
            size = arc.infos[pkl].file_size
            if size > MAX_PICKLE_SCAN:
                acc.problems.append(f"{pkl} declares {size} bytes, over the {MAX_PICKLE_SCAN}-byte pickle cap")
            data = arc.member(pkl, MAX_PICKLE_SCAN)
            before = len(acc.errors)
            end = scan_stream(data, pkl, acc, ctx, max_pickles=1)
            broken = len(acc.errors) > before
            trailing_findings(data, end, pkl, acc, arc.torchscript)
        for info in arc.zf.infolist():  # the shadowed copies of a duplicated name: another reader's pick
            if arc.infos.get(info.filename) is not info and info.file_size <= MAX_PICKLE_SCAN:
                try:
                    shadowed = read_zip_member(arc.zf, info, f"duplicate zip member {info.filename!r}")
                except Inflation as exc:
                    acc.problems.append(str(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds on broken members
                    acc.problems.append(f"cannot read duplicate zip member {info.filename!r}: {exc}")
                    continue
                scan_stream(shadowed, f"{info.filename} (duplicate)", acc, ctx)
        scan_stream(arc.tail_bytes(), "after the zip end record", acc)
        unexpected = arc.unexpected(acc.storage_keys)
        if broken:  # a data.pkl cut short names only some storages: its records are unjudged, as the loader does
            unexpected = [n for n in unexpected if not n.startswith(arc.prefix + "data/")]
        acc.problems += [f"zip member {n!r} is never read by torch.load" for n in unexpected]
        side = set(arc.side_pickles())
        never_read = set(unexpected)  # a set: a list's `in` made 9,000 members cost 40M comparisons
        for name, info in arc.infos.items():
            if name == pkl or info.file_size > MAX_PICKLE_SCAN:
                continue
            try:
                _scan_member(arc, name, name in side, name in never_read, verify_crc, acc, ctx)
            except UnsafeContent as exc:  # this member is a compression bomb: the others are still scanned
                acc.problems.append(exc.problem)
        return "torchscript zip" if arc.torchscript else "torch zip"
    finally:
        arc.close()


def _scan_member(arc: Any, name: str, side: bool, unexpected: bool, verify_crc: bool, acc: Findings,
                 ctx: Context) -> None:
    if side:
        scan_stream(arc.member(name), name, acc, ctx)
    elif unexpected or not name.startswith(arc.prefix):
        data = arc.member(name, any_method=True)
        if name.endswith(".npy"):
            from ..formats.npy import scan_bytes

            scan_bytes(data, name, acc)
        elif name.endswith(".pkl") or data[:1] == b"\x80":
            scan_stream(data, name, acc, ctx)
        else:
            scan_nested(data, name, acc, ctx)
    elif verify_crc:
        before = len(arc.problems)
        arc.check_crc(name)
        acc.errors += [f"corrupt tensor data: {p}" for p in arc.problems[before:]]


def _scan_pickles(target: str, acc: Findings) -> str:
    """A legacy torch file (five pickles, the storages, nothing after) or a bare pickle stream."""
    from ..errors import BadInput
    from ..formats import torchlegacy

    try:
        end, size = torchlegacy.storages_end(target)
    except BadInput as exc:
        legacy = not exc.problem.startswith("not a checkpoint")
        if legacy:
            acc.errors.append(exc.problem)
    except StatecliError:
        legacy = False
    else:
        with open_regular(target) as f:
            scan_stream(f, "pickle", acc, max_pickles=5)
        if end < size:
            torchlegacy.tail_findings(target, end, size, acc)
        return "torch legacy"
    with open_regular(target) as f:
        stop = scan_stream(f, "pickle", acc, max_pickles=5 if legacy else None)
        size = f.seek(0, 2)
    if not legacy and stop < size:
        acc.problems.append(f"{size - stop} byte(s) after the last pickle that are not a pickle")
    if not legacy and not acc.problems and not any(g.verdict is DANGEROUS for g in acc.globals):
        acc.errors.append("not a checkpoint: a bare pickle, not a torch.save file")
    return "torch legacy" if legacy else "pickle"


def _scan_npy(target: str, acc: Findings) -> None:
    from ..formats import npy

    with open_regular(target) as f:
        data = f.read(npy.MAX_MEMBER)
    if not npy.scan_bytes(data, target, acc):
        acc.errors.append("not a checkpoint (looks like a numpy array)")


def _scan_tar(target: str, acc: Findings) -> None:
    """Pre-0.4 tar checkpoints: every member scanned as a sequence of pickles (or as an .npy); the
    loader refuses them through the same function, so inspect/check/cast agree with scan."""
    from ..formats.torchtar import scan_tar

    scan_tar(target, acc)
