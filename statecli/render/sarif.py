"""`--format sarif`: SARIF 2.1.0 for scan, check and batch reports, as GitHub code scanning takes it: one
run, one rule per finding class, the file as artifact location, a fingerprint from (relative path, rule
id, location) so no uploader hashes a binary file, and at most 25,000 results / 10 MB with a note when
cut (GitHub rejects larger uploads)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any

from .. import __version__
from ..analyses.findings import SECURITY_SEVERITY, Issue, Level, rel_path

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
MAX_RESULTS = 25_000  # GitHub code scanning: results per run
MAX_BYTES = 10_000_000  # GitHub code scanning: the upload (we keep the uncompressed file under it)
INFO_URI = "https://github.com/OWNER/statecli"  # as [project.urls] in pyproject.toml until the first release
FINGERPRINT = "primaryLocationLineHash"  # the key GitHub reads; given, so its uploader never computes one

_RULE_TEXT = {
    "scan/dangerous-global": "A pickle references a global whose loading runs code",
    "scan/needs-trust-global": "A pickle references a global outside torch's weights-only allowlist",
    "scan/hidden-payload": "The container has a place where a payload could hide",
    "scan/chat-template": "A GGUF chat template reaches code a runtime's render would run",
    "scan/unreadable": "The file could not be read as a checkpoint",
}


def _rule(rule_id: str, issues: Sequence[Issue]) -> dict[str, Any]:
    text = _RULE_TEXT.get(rule_id) or f"statecli check rule {rule_id.split('/', 1)[-1]} failed"
    level = max((i.level for i in issues), key=lambda lv: (Level.NOTE, Level.WARNING, Level.ERROR).index(lv))
    props: dict[str, Any] = {"tags": ["security"] if rule_id.startswith("scan/") else ["checkpoint"]}
    severities = [SECURITY_SEVERITY[i.verdict] for i in issues if i.verdict in SECURITY_SEVERITY]
    if severities:
        props["security-severity"] = f"{max(severities):.1f}"
    return {"id": rule_id, "name": rule_id.replace("/", "-"), "shortDescription": {"text": text},
            "fullDescription": {"text": text}, "defaultConfiguration": {"level": str(level)},
            "helpUri": INFO_URI, "properties": props}


def _result(issue: Issue, rule_index: int, accepted: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ruleId": issue.rule, "ruleIndex": rule_index, "level": str(issue.level), "message": {"text": issue.message},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": rel_path(issue.path)},
                                            "region": {"startLine": 1}},
                       "logicalLocations": [{"fullyQualifiedName": issue.location, "kind": "member"}]}],
        "partialFingerprints": {FINGERPRINT: issue.fingerprint},
    }
    if accepted is not None:
        out["suppressions"] = [{"kind": "external", "status": "accepted", "justification": accepted}]
    return out


def sarif_log(issues: Sequence[Issue], accepted: dict[str, str] | None = None,
              max_results: int = MAX_RESULTS, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """The SARIF log for `issues`; `accepted` maps a fingerprint to its baseline justification (shown as
    a suppression). Over either cap, the first results that fit are kept and a notification says how
    many were left out."""
    accepted = accepted or {}
    rule_ids = list(dict.fromkeys(i.rule for i in issues))
    rules = [_rule(r, [i for i in issues if i.rule == r]) for r in rule_ids]
    index = {r: n for n, r in enumerate(rule_ids)}
    results = [_result(i, index[i.rule], accepted.get(i.fingerprint)) for i in issues[:max_results]]
    log = _log(rules, results, len(issues))
    size = len(json.dumps(log))
    while size > max_bytes and results:  # drop from the end until it fits: a few passes, each halving the excess
        excess = size - max_bytes
        per = max(1, size // max(1, len(results)))
        results = results[:max(0, len(results) - excess // per - 1)]
        log = _log(rules, results, len(issues))
        size = len(json.dumps(log))
    return log


def _log(rules: list[dict[str, Any]], results: list[dict[str, Any]], total: int) -> dict[str, Any]:
    invocation: dict[str, Any] = {"executionSuccessful": True}
    if len(results) < total:
        invocation["toolExecutionNotifications"] = [{"level": "warning", "message": {
            "text": f"truncated: {len(results)} of {total} results kept (GitHub code scanning accepts at most "
                    f"{MAX_RESULTS:,} results and {MAX_BYTES // 1_000_000} MB per upload); see --format json for all"}}]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "statecli", "version": __version__, "semanticVersion": __version__,
                            "informationUri": INFO_URI, "rules": rules}},
        "automationDetails": {"id": "statecli/"},
        "invocations": [invocation],
        "results": results,
        "properties": {"results_total": total, "truncated": len(results) < total},
    }
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}


def write_sarif(result: Any, out: IO[str]) -> None:
    """SARIF for a result that has findings: a scan report, a check result, a batch report."""
    from ..analyses.findings import check_issues, scan_issues
    from ..errors import UsageError

    name = type(result).__name__
    if name == "ScanReport":
        issues = scan_issues(result)
    elif name == "CheckResult":
        issues = check_issues(result)
    elif hasattr(result, "issues"):
        issues = list(result.issues())
    else:
        raise UsageError(None, "--format sarif is available for scan, check and report", "use --format json here")
    accepted = {a.fingerprint: a.justification for a in getattr(result, "accepted", ())}
    json.dump(sarif_log(issues + [a.issue for a in getattr(result, "accepted", ())], accepted), out, indent=1)
    out.write("\n")
