"""`statecli scan`: every global each pickle of a checkpoint resolves (read by the C unpickler with
inert stubs, as the loader reads it, plus a static walk for opcodes, calls and nested pickles), every
container finding, one verdict per file. Nothing is executed; the container checks, the pickle
reading and the verdicts are the formats layer's, so `scan` and the loader agree."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ExitCode, StatecliError, UnsafeContent
from ..formats import detect_format, resolve_path
from ..formats._common import open_regular
from ..io.urls import is_remote
from ..pickle.pickles import Context, Findings, GlobalRef, scan_nested, scan_stream
from ..pickle.verdict import DCP_TRUSTED
from ..state import SCHEMA_VERSION, Verdict
from .scan_folder import Role, Target, TargetKind, plan

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
    role: Role = Role.LOADED  # BESIDE: in a folder checkpoint, not read by its loader (counts with --strict)
    code: tuple[str, ...] = ()  # a TorchScript archive's code/ sources: what its class names run

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
    def exit_code(self) -> ExitCode:
        v = self.verdict
        if v is DANGEROUS or self.problems:
            return ExitCode.UNSAFE
        if self.errors:
            return ExitCode.BAD_INPUT
        return ExitCode.DIFFERENT if v is NEEDS_TRUST else ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "verdict": str(self.verdict), "pickles": self.pickles,
                "globals": [{"name": g.name, "verdict": str(g.verdict), "where": g.where, "opcode": g.opcode}
                            | ({"detail": g.detail} if g.detail else {}) for g in self.globals],
                "calls": [{"opcode": o, "callee": c, "where": w} for o, c, w in self.calls],
                "problems": list(self.problems), "error": self.error, "exit_code": self.exit_code,
                "role": self.role.value} | ({"code": list(self.code)} if self.code else {})

    def rows(self) -> list[dict[str, Any]]:
        return [{"path": self.path, "name": g.name, "verdict": str(g.verdict), "where": g.where, "opcode": g.opcode}
                for g in self.globals]


@dataclass(frozen=True)
class ScanReport:
    """Several files: exit 3 if any finding, else 2 if any unreadable, else 1 if any needs trust. Files
    beside a folder checkpoint (role BESIDE) are listed and count only when `strict`."""

    files: tuple[ScanResult, ...] = field(default_factory=tuple)
    strict: bool = False

    def counts(self, r: ScanResult) -> bool:
        return self.strict or r.role is Role.LOADED

    @property
    def exit_code(self) -> ExitCode:
        return max((r.exit_code for r in self.files if self.counts(r)), default=ExitCode.OK)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "strict": self.strict,
                "files": [r.to_dict() | {"counted": self.counts(r)} for r in self.files]}

    def rows(self) -> list[dict[str, Any]]:
        return [row for r in self.files for row in r.rows()]


def scan_paths(paths: list[str], strict: bool = False) -> ScanReport:
    """Scan every checkpoint named (a folder: every checkpoint below it, each folder checkpoint whole:
    see scan_folder). `strict`: the files beside a folder checkpoint count in the exit code too."""
    out: list[ScanResult] = []
    for t in plan(paths):
        # A remote file's tensor bytes are not fetched to check CRCs (that would download all of it): the
        # pickles, the container checks and every finding are the same, read by range requests.
        r = _config_result(t) if t.kind is TargetKind.CONFIG else scan(t.path, verify_crc=not is_remote(t.path))
        if t.optional and r.errors and not (r.globals or r.calls or r.problems):
            continue  # a companion without a checkpoint suffix whose bytes are no checkpoint: no loader reads it
        out.append(replace(r, role=t.role))
    return ScanReport(tuple(out), strict)


def _config_result(t: Target) -> ScanResult:
    """A config.json whose auto_map names code: transformers imports that code when trusted, so the
    folder needs trust whatever its weights are (statecli itself never runs it)."""
    assert t.code is not None
    why = t.code.describe()
    refs = [GlobalRef(f"auto_map: {f}", "config.json auto_map", "auto_map", NEEDS_TRUST, why)
            for f in (*t.code.files, *t.code.absent)]
    return ScanResult(t.path, "hugging face config", tuple(refs))


def _result(path: str, fmt: str, acc: Findings) -> ScanResult:
    return ScanResult(path, fmt, tuple(acc.globals), tuple(acc.calls), tuple(dict.fromkeys(acc.problems)),
                      acc.pickles, tuple(dict.fromkeys(acc.errors)), code=tuple(dict.fromkeys(acc.code)))


def scan(path: str, verify_crc: bool = True) -> ScanResult:
    """Scan one checkpoint (file, sharded folder or DCP directory). `verify_crc` reads every zip
    member to check its CRC (the whole file); without it only the pickles are read."""
    acc = Findings()
    fmt = ""
    try:
        target = resolve_path(path)
        if os.path.isdir(target):
            fmt = "torch.distributed.checkpoint"
            _scan_dcp(target, acc)
            return _result(path, fmt, acc)
        if target.endswith(".index.json"):
            return _scan_sharded(path, target, verify_crc)
        fmt = _scan_file(target, acc, verify_crc)
    except UnsafeContent as exc:  # a finding met while reading (a compression bomb): exit 3, as the readers
        acc.problems.append(exc.problem)
    except StatecliError as exc:
        acc.errors.append(exc.problem)
    return _result(path, fmt, acc)


def _scan_dcp(folder: str, acc: Findings) -> None:
    """`.metadata` (DCP's dataclasses trusted by exact name), then every item it names in the `.distcp`
    files, each scanned as the standalone file torch.load would read (any size, any format)."""
    from ..formats import dcp

    meta = dcp.metadata_path(folder)
    with open_regular(meta) as f:
        scan_stream(f, ".metadata", acc, Context(DCP_TRUSTED))
    done: set[tuple[str, int, int]] = set()
    for item in dcp.layout(folder).items:
        if item.span in done:  # records naming the same bytes: scanned once
            continue
        done.add(item.span)
        name = item.name
        sub = Findings()
        try:
            dcp.refuse_transforms(item)
            _scan_file(item.path, sub, verify_crc=False)
        except StatecliError as exc:
            sub.errors.append(exc.problem)
        acc.globals += [GlobalRef(g.name, f"{name}: {g.where}", g.opcode, g.verdict, g.detail) for g in sub.globals]
        acc.calls += [(o, c, f"{name}: {w}") for o, c, w in sub.calls]
        acc.problems += [f"{name}: {p}" for p in sub.problems]
        acc.errors += [f"{name}: {p}" for p in sub.errors]
        acc.pickles += sub.pickles


def _scan_file(target: str, acc: Findings, verify_crc: bool) -> str:
    """One file (or one DCP item) by the container its bytes announce; returns the format's name."""
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
    return fmt


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
    from ..formats.torchzip import trailing_findings
    from ..formats.zipcheck import Archive, fold
    from ..io.limits import Inflation, read_zip_member

    try:
        arc = Archive(target)
    except BadInput as exc:
        if exc.problem.startswith("not a checkpoint") and npy.scan_zip(target, acc):
            return "numpy npz"
        raise
    try:
        acc.problems += arc.problems
        ctx = Context(torchscript=arc.torchscript)
        if arc.torchscript:
            acc.code += sorted(n for n in arc.infos if fold(n).startswith(fold(arc.prefix) + "code/")
                               and fold(n).endswith(".py"))
        pkl = arc.lookup("data.pkl") or arc.prefix + "data.pkl"
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
            shadowed_name = arc.folded.get(fold(info.filename)) != info.filename  # a case variant of another
            if (arc.infos.get(info.filename) is not info or shadowed_name) and info.file_size <= MAX_PICKLE_SCAN:
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
    from ..formats.zipcheck import fold

    if side:
        scan_stream(arc.member(name), name, acc, ctx)
    elif unexpected or not name.startswith(arc.prefix):
        data = arc.member(name, any_method=True)
        if name.endswith(".npy"):
            from ..formats.npy import scan_bytes

            scan_bytes(data, name, acc)
        elif fold(name).endswith(".pkl") or data[:1] == b"\x80":
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

    refused = None
    try:
        end, size = torchlegacy.storages_end(target)
    except BadInput as exc:
        legacy = not exc.problem.startswith("not a checkpoint")
        if legacy:
            acc.errors.append(exc.problem)
        refused = exc.problem
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
    if not legacy and refused and acc.errors and not acc.globals and not acc.problems:
        acc.errors[:] = [refused]  # no pickle at all (nothing resolved): what the file looks like
        return "pickle"
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
