"""The findings of `scan` and `check` as one flat list of issues, each with a stable rule id, a severity
and a location inside the file: what SARIF reports, what a baseline accepts and what a batch record
lists. One home for the identity of a finding, so a fingerprint, a baseline entry and a SARIF result
all name the same thing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ..io.urls import is_remote
from ..state import Verdict
from ..vocab import CheckRule

if TYPE_CHECKING:
    from .check import CheckResult, Finding
    from .scan import ScanReport, ScanResult

__all__ = ["Issue", "Level", "ScanRule", "check_issues", "check_locations", "issue_of_global", "rel_path", "scan_issues",
           "scan_file_issues"]


class Level(StrEnum):
    """SARIF's levels, which GitHub code scanning shows as error / warning / note."""

    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


class ScanRule(StrEnum):
    """One rule id per class of scan finding; `check` findings use `check/<CheckRule>`."""

    DANGEROUS_GLOBAL = "scan/dangerous-global"  # loading would run code (os.system, eval, ...)
    UNTRUSTED_GLOBAL = "scan/needs-trust-global"  # a global outside torch's weights-only allowlist
    HIDDEN_PAYLOAD = "scan/hidden-payload"  # a place in the container where a payload could hide
    CHAT_TEMPLATE = "scan/chat-template"  # a GGUF chat template reaches code a runtime's render would run
    UNREADABLE = "scan/unreadable"  # not a checkpoint, truncated, or the read failed


_GLOBAL_RULE = {Verdict.DANGEROUS: ScanRule.DANGEROUS_GLOBAL, Verdict.NEEDS_TRUST: ScanRule.UNTRUSTED_GLOBAL,
                Verdict.MALFORMED: ScanRule.HIDDEN_PAYLOAD}
# GitHub's security-severity (0-10) per verdict: critical, high, medium as its UI buckets them.
SECURITY_SEVERITY = {Verdict.DANGEROUS: 9.5, Verdict.MALFORMED: 8.0, Verdict.NEEDS_TRUST: 5.0}


@dataclass(frozen=True)
class Issue:
    """One finding: `location` says where inside the file (a pickle member and the global it names, a
    container problem's text, a check rule's subject), so two findings in one file differ."""

    path: str
    rule: str
    level: Level
    location: str
    message: str
    verdict: Verdict | None = None  # for scan findings: what GitHub's security-severity is taken from

    @property
    def fingerprint(self) -> str:
        """From (relative path, rule id, location) only: stable across runs and machines, and never a
        hash of the file's bytes (GitHub would otherwise hash lines of a binary file)."""
        text = "\0".join((rel_path(self.path), self.rule, self.location))
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def rel_path(path: str) -> str:
    """A local path relative to the working directory, with '/' (how SARIF and baselines name files);
    a URL as it is (credentials are never in the display name). Outside the working directory: absolute."""
    if is_remote(path):
        return path
    rel = os.path.relpath(os.path.abspath(path))
    if rel.startswith(".."):
        rel = os.path.abspath(path)
    return rel.replace(os.sep, "/")


def issue_of_global(path: str, name: str, where: str, verdict: Verdict, detail: str = "") -> Issue:
    rule = _GLOBAL_RULE.get(verdict, ScanRule.UNTRUSTED_GLOBAL)
    level = Level.ERROR if verdict in (Verdict.DANGEROUS, Verdict.MALFORMED) else Level.WARNING
    text = f"{verdict}: {name} in {where}" + (f" ({detail})" if detail else "")
    return Issue(path, rule, level, f"{where}: {name}", text, verdict)


def issue_of_problem(path: str, problem: str) -> Issue:
    return Issue(path, ScanRule.HIDDEN_PAYLOAD, Level.ERROR, problem, problem, Verdict.MALFORMED)


def issue_of_template(path: str, route: str) -> Issue:
    return Issue(path, ScanRule.CHAT_TEMPLATE, Level.ERROR, route, route, Verdict.DANGEROUS)


def issue_of_error(path: str, error: str) -> Issue:
    return Issue(path, ScanRule.UNREADABLE, Level.ERROR, error, error)


def scan_file_issues(r: ScanResult) -> list[Issue]:
    """Every finding of one scanned file: globals outside the allowlist, chat-template routes, container
    problems, read errors."""
    out = [issue_of_global(r.path, g.name, g.where, g.verdict, g.detail) for g in r.globals if g.verdict is not Verdict.SAFE]
    out += [issue_of_template(r.path, t) for t in r.templates]
    out += [issue_of_problem(r.path, p) for p in r.problems]
    out += [issue_of_error(r.path, e) for e in r.errors]
    return out


def scan_issues(report: ScanReport) -> list[Issue]:
    """Every finding of a scan; files that do not count (beside a folder checkpoint without --strict)
    are reported as notes."""
    out: list[Issue] = []
    for r in report.files:
        found = scan_file_issues(r)
        if not report.counts(r):
            found = [Issue(i.path, i.rule, Level.NOTE, i.location, i.message, i.verdict) for i in found]
        out += found
    return out


def check_rule_id(rule: CheckRule | str) -> str:
    return f"check/{rule}"


def check_locations(findings: Iterable[Finding]) -> list[tuple[Finding, str]]:
    """Each check finding with its location: its rule and its place among the file's findings of that rule."""
    out = []
    seen: dict[tuple[str, str], int] = {}
    for f in findings:
        n = seen[(f.path, f.rule)] = seen.get((f.path, f.rule), 0) + 1
        out.append((f, f"{f.rule}#{n}"))
    return out


def check_issues(result: CheckResult) -> list[Issue]:
    """Every failed rule, unreadable input and unsafe file of a check (passed rules are no findings).
    A rule's location is its name and its place among the file's findings of that rule (the key rules
    give one finding per pattern), never its reason: a reason quotes sizes and counts that change."""
    out = [Issue(f.path, check_rule_id(f.rule), Level.ERROR, where, f.reason)
           for f, where in check_locations(result.findings) if not f.passed]
    out += [Issue(p, check_rule_id(CheckRule.READ), Level.ERROR, str(CheckRule.READ), m) for p, m in result.errors]
    out += [Issue(p, check_rule_id(CheckRule.UNSAFE), Level.ERROR, str(CheckRule.UNSAFE), m, Verdict.DANGEROUS)
            for p, m in result.unsafe]
    return out
