"""`--baseline FILE`: findings a team has accepted, each with an owner and an expiry date. An accepted
finding no longer sets the exit code of `scan` or `check` (it stays listed, as accepted); once its date
has passed it counts again and a note says so. A baseline file is JSON or TOML:

    {"accepted": [{"rule": "scan/needs-trust-global", "path": "models/*.pt", "location": "archive/data.pkl: my.Cls",
                   "owner": "ml-platform@example.com", "expires": "2027-06-30", "reason": "our own class"}]}

An entry names its finding by `fingerprint` (as in the SARIF output) or by `rule` plus `path` (a glob,
relative to the working directory) and optionally `location`."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, UsageError
from ..notes import Note, NoteKind
from .findings import Issue, check_locations, check_rule_id, issue_of_error, issue_of_global, issue_of_problem, rel_path

if TYPE_CHECKING:
    from .check import CheckResult
    from .scan import ScanReport, ScanResult

__all__ = ["Accepted", "Baseline", "BaselineEntry", "apply_to_check", "apply_to_scan", "load_baseline", "with_baseline"]


@dataclass(frozen=True)
class BaselineEntry:
    owner: str
    expires: dt.date
    reason: str = ""
    fingerprint: str | None = None
    rule: str | None = None
    path: str | None = None  # a glob over the relative path
    location: str | None = None

    def matches(self, issue: Issue) -> bool:
        if self.fingerprint is not None:
            return self.fingerprint == issue.fingerprint
        return (self.rule == issue.rule and fnmatch.fnmatchcase(rel_path(issue.path), self.path or "*")
                and (self.location is None or self.location == issue.location))

    def to_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "expires": self.expires.isoformat(), "reason": self.reason}


@dataclass(frozen=True)
class Accepted:
    """A finding the baseline accepts (until its entry expires)."""

    issue: Issue
    entry: BaselineEntry

    @property
    def fingerprint(self) -> str:
        return self.issue.fingerprint

    @property
    def justification(self) -> str:
        return f"accepted by {self.entry.owner} until {self.entry.expires.isoformat()}" + (
            f": {self.entry.reason}" if self.entry.reason else "")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.issue.path, "rule": self.issue.rule, "location": self.issue.location,
                "fingerprint": self.fingerprint, **self.entry.to_dict()}


@dataclass(frozen=True)
class Baseline:
    entries: tuple[BaselineEntry, ...]
    today: dt.date

    def decide(self, issue: Issue) -> tuple[Accepted | None, str | None]:
        """(the acceptance, None) for an accepted finding; (None, a note) for one whose acceptance expired."""
        expired = None
        for e in self.entries:
            if e.matches(issue):
                if e.expires >= self.today:
                    return Accepted(issue, e), None
                expired = (f"baseline: the acceptance of {issue.rule} in {rel_path(issue.path)} by {e.owner} expired on "
                           f"{e.expires.isoformat()}; the finding counts again")
        return None, expired


def load_baseline(path: str, today: dt.date | None = None) -> Baseline:
    """Read a baseline file; an entry without an owner or a valid expiry date is refused."""
    try:
        with open(path, "rb") as f:
            raw = f.read(16 << 20)
    except OSError as exc:
        raise BadInput(path, f"cannot read the baseline: {exc.strerror or exc}") from exc
    try:
        if path.endswith(".toml"):
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(path, f"the baseline is not valid {'TOML' if path.endswith('.toml') else 'JSON'}: {exc}") from exc
    items = data.get("accepted") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise UsageError(path, "a baseline holds a list 'accepted' of findings")
    return Baseline(tuple(_entry(path, n, item) for n, item in enumerate(items, 1)),
                    today or dt.datetime.now(dt.UTC).date())


def _entry(source: str, n: int, item: Any) -> BaselineEntry:
    where = f"accepted finding {n}"
    if not isinstance(item, dict):
        raise UsageError(source, f"{where} is not a table")
    owner, expires = item.get("owner"), item.get("expires")
    if not isinstance(owner, str) or not owner.strip():
        raise UsageError(source, f"{where} has no owner", "every accepted finding names who accepted it")
    try:
        date = expires if isinstance(expires, dt.date) else dt.date.fromisoformat(str(expires))
    except ValueError:
        raise UsageError(source, f"{where}: expires {expires!r} is not a date", "e.g. 2027-06-30") from None
    texts = {k: item.get(k) for k in ("fingerprint", "rule", "path", "location", "reason")}
    if any(v is not None and not isinstance(v, str) for v in texts.values()):
        raise UsageError(source, f"{where}: fingerprint, rule, path, location and reason are strings")
    if texts["fingerprint"] is None and texts["rule"] is None:
        raise UsageError(source, f"{where} names no finding", "give its fingerprint, or its rule and path")
    return BaselineEntry(owner.strip(), date, texts["reason"] or "", texts["fingerprint"], texts["rule"],
                         texts["path"], texts["location"])


def _sort(baseline: Baseline, issues: Iterable[Issue], accepted: list[Accepted], notes: list[str]) -> set[Issue]:
    """The issues the baseline accepts; the acceptances and expiry notes are appended to the lists given."""
    out: set[Issue] = set()
    for issue in issues:
        ok, note = baseline.decide(issue)
        if ok is not None:
            accepted.append(ok)
            out.add(issue)
        elif note is not None:
            notes.append(note)
    return out


def _scan_file(r: ScanResult, baseline: Baseline, accepted: list[Accepted], notes: list[str]) -> ScanResult:
    globals_ = {g: issue_of_global(r.path, g.name, g.where, g.verdict, g.detail) for g in r.globals
                if str(g.verdict) != "safe"}
    problems = {p: issue_of_problem(r.path, p) for p in r.problems}
    errors = {e: issue_of_error(r.path, e) for e in r.errors}
    gone = _sort(baseline, [*globals_.values(), *problems.values(), *errors.values()], accepted, notes)
    return replace(r, globals=tuple(g for g in r.globals if globals_.get(g) not in gone),
                   problems=tuple(p for p in r.problems if problems[p] not in gone),
                   errors=tuple(e for e in r.errors if errors[e] not in gone))


def apply_to_scan(report: ScanReport, baseline: Baseline) -> ScanReport:
    """The report without the accepted findings (listed in `accepted`), with a note per expired acceptance."""
    accepted: list[Accepted] = []
    notes: list[str] = []
    files = tuple(_scan_file(r, baseline, accepted, notes) for r in report.files)
    return replace(report, files=files, accepted=tuple(accepted), notes=_expired(notes))


def apply_to_check(result: CheckResult, baseline: Baseline) -> CheckResult:
    """Accepted rule failures pass (their reason says by whom and until when); accepted unreadable or
    unsafe inputs leave those lists. Expired acceptances are notes."""
    from .findings import check_issues

    accepted: list[Accepted] = []
    notes: list[str] = []
    gone = _sort(baseline, check_issues(result), accepted, notes)
    by_place = {(a.issue.path, a.issue.rule, a.issue.location): a for a in accepted}
    findings = []
    for f, where in check_locations(result.findings):
        ok = by_place.get((f.path, check_rule_id(f.rule), where))
        findings.append(f if ok is None or f.passed else replace(f, passed=True, reason=f"{f.reason} ({ok.justification})"))
    left = {(i.path, i.message) for i in gone}
    return replace(result, findings=tuple(findings), errors=tuple(e for e in result.errors if e not in left),
                   unsafe=tuple(u for u in result.unsafe if u not in left), accepted=tuple(accepted),
                   notes=_expired(notes))


def _expired(texts: list[str]) -> tuple[Note, ...]:
    """The expiry notes, once each, as the Note records every result carries."""
    return tuple(Note(NoteKind.BASELINE, t) for t in dict.fromkeys(texts))


def with_baseline(result: Any, path: str | None) -> Any:
    """A scan report or check result with the baseline in `path` applied (unchanged without one)."""
    from .scan import ScanReport

    if path is None:
        return result
    baseline = load_baseline(path)
    return apply_to_scan(result, baseline) if isinstance(result, ScanReport) else apply_to_check(result, baseline)
