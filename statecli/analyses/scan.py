"""`statecli scan`: every global each pickle of a checkpoint resolves (read by the C unpickler with
inert stubs, as the loader reads it, plus a static walk for opcodes, calls and nested pickles), every
container finding, one verdict per file. Nothing is executed; each format's handler walks its own
container (formats/registry.py), the pickle reading and the verdicts are the pickle layer's, so
`scan` and the loader agree. This module keeps the results and which files a path stands for."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ExitCode
from ..formats import scan_path
from ..io.urls import is_remote
from ..notes import Note
from ..pickle.pickles import Findings, GlobalRef
from ..state import SCHEMA_VERSION, Format, Verdict
from .scan_folder import Role, Target, TargetKind, plan

SAFE, NEEDS_TRUST, DANGEROUS, MALFORMED = Verdict.SAFE, Verdict.NEEDS_TRUST, Verdict.DANGEROUS, Verdict.MALFORMED
__all__ = ["GlobalRef", "ScanReport", "ScanResult", "scan", "scan_paths"]


@dataclass(frozen=True)
class ScanResult:
    """One file's scan. `problems` are findings (a place a payload hides: exit 3); `errors` mean
    the file is unreadable or not a checkpoint (exit 2) unless a finding outranks them."""

    path: str
    format: Format | None  # None: not even the format could be told (see `errors`)
    globals: tuple[GlobalRef, ...] = ()
    calls: tuple[tuple[str, str, str], ...] = ()  # (opcode, callee, where)
    problems: tuple[str, ...] = ()
    pickles: int = 0
    errors: tuple[str, ...] = ()
    role: Role = Role.LOADED  # BESIDE: in a folder checkpoint, not read by its loader (counts with --strict)
    code: tuple[str, ...] = ()  # a TorchScript archive's code/ sources: what its class names run
    templates: tuple[str, ...] = ()  # a GGUF chat template's routes to code a runtime's render runs (dangerous)

    @property
    def unsafe_content(self) -> tuple[str, ...]:
        """Every finding that is not a global: chat-template routes, then places a payload could hide."""
        return self.templates + self.problems

    @property
    def verdict(self) -> Verdict:
        worst = max((g.verdict for g in self.globals), key=lambda v: v.rank, default=SAFE)
        if worst is DANGEROUS or self.templates:
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
        return {"path": self.path, "format": self.format or "", "verdict": str(self.verdict), "pickles": self.pickles,
                "globals": [{"name": g.name, "verdict": str(g.verdict), "where": g.where, "opcode": g.opcode}
                            | ({"detail": g.detail} if g.detail else {}) for g in self.globals],
                "calls": [{"opcode": o, "callee": c, "where": w} for o, c, w in self.calls],
                "problems": list(self.problems), "error": self.error, "exit_code": self.exit_code,
                "role": self.role.value} | ({"code": list(self.code)} if self.code else {}) | (
                    {"templates": list(self.templates)} if self.templates else {})

    def rows(self) -> list[dict[str, Any]]:
        return [{"path": self.path, "name": g.name, "verdict": str(g.verdict), "where": g.where, "opcode": g.opcode}
                for g in self.globals]


@dataclass(frozen=True)
class ScanReport:
    """Several files: exit 3 if any finding, else 2 if any unreadable, else 1 if any needs trust. Files
    beside a folder checkpoint (role BESIDE) are listed and count only when `strict`."""

    files: tuple[ScanResult, ...] = field(default_factory=tuple)
    strict: bool = False
    accepted: tuple[Any, ...] = ()  # analyses.baseline.Accepted: findings a --baseline accepts (left out of files)
    notes: tuple[Note, ...] = ()  # e.g. a baseline acceptance that expired

    def counts(self, r: ScanResult) -> bool:
        return self.strict or r.role is Role.LOADED

    @property
    def exit_code(self) -> ExitCode:
        return max((r.exit_code for r in self.files if self.counts(r)), default=ExitCode.OK)

    @property
    def verdict(self) -> Verdict:
        """The worst verdict of the files that count (safe when none does): a batch record's verdict."""
        return max((r.verdict for r in self.files if self.counts(r)), key=lambda v: v.rank, default=SAFE)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "strict": self.strict,
                "files": [r.to_dict() | {"counted": self.counts(r)} for r in self.files]} | (
                    {"accepted": [a.to_dict() for a in self.accepted]} if self.accepted else {})

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
        if t.optional and r.errors and not (r.globals or r.calls or r.unsafe_content):
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
    return ScanResult(t.path, Format.HF_CONFIG, tuple(refs))


def _result(path: str, fmt: Format | None, acc: Findings) -> ScanResult:
    return ScanResult(path, fmt, tuple(acc.globals), tuple(acc.calls), tuple(dict.fromkeys(acc.problems)),
                      acc.pickles, tuple(dict.fromkeys(acc.errors)), code=tuple(dict.fromkeys(acc.code)),
                      templates=tuple(dict.fromkeys(acc.templates)))


def scan(path: str, verify_crc: bool = True) -> ScanResult:
    """Scan one checkpoint (file, sharded folder or DCP directory) with the handler its layout or bytes
    name. `verify_crc` reads every zip member to check its CRC (the whole file); without it only the
    pickles are read."""
    acc = Findings()
    fmt = scan_path(path, acc, verify_crc)
    return _result(path, fmt, acc)
