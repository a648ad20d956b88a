"""`statecli report out.ndjson`: a batch run's records aggregated offline: counts per verdict and format,
the most frequent findings, the slowest and largest files, the errors; as JSON, Markdown, HTML, JUnit
XML or SARIF (the records' findings)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..analyses.findings import Issue, Level
from ..errors import ExitCode
from ..state import SCHEMA_VERSION, Verdict

__all__ = ["BatchReport", "junit_xml", "report_html"]

TOP = 10


def _outcome(rec: dict[str, Any]) -> str:
    """A record's verdict word: scan's verdict (a file only unreadable is "unreadable", as scan's summary
    says: "malformed" is a finding, exit 3), pass/fail for check, error, or ok."""
    if "error" in rec:
        return "error"
    if "verdict" in rec:
        unreadable = rec["verdict"] == Verdict.MALFORMED and rec.get("exit_code") == ExitCode.BAD_INPUT
        return "unreadable" if unreadable else str(rec["verdict"])
    if "passed" in rec:
        return "pass" if rec["passed"] else "fail"
    return "ok" if rec.get("exit_code") == 0 else f"exit {rec.get('exit_code')}"


@dataclass(frozen=True)
class BatchReport:
    records: tuple[dict[str, Any], ...]
    source: str = ""

    columns = ("input", "command", "format", "outcome", "exit_code", "findings", "size", "seconds", "error")

    @property
    def exit_code(self) -> ExitCode:
        return max((ExitCode(r.get("exit_code", ExitCode.BAD_INPUT)) for r in self.records), default=ExitCode.OK)

    def junit_xml(self) -> str:
        return junit_xml(self)

    def html_page(self) -> str:
        return report_html(self)

    def rows(self) -> list[dict[str, Any]]:
        return [{"input": r.get("input"), "command": r.get("command"), "format": r.get("format") or "",
                 "outcome": _outcome(r), "exit_code": r.get("exit_code"), "findings": len(r.get("findings") or ()),
                 "size": (r.get("identity") or {}).get("size"), "seconds": (r.get("run") or {}).get("seconds"),
                 "error": r.get("error") or ""} for r in self.records]

    def _top(self, key: str) -> list[dict[str, Any]]:
        rows = [row for row in self.rows() if row[key] is not None]
        return sorted(rows, key=lambda row: -row[key])[:TOP]

    def top_findings(self) -> list[tuple[str, int]]:
        return Counter(f["rule"] for r in self.records for f in r.get("findings") or ()).most_common(TOP)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "source": self.source, "records": len(self.records),
                "exit_code": int(self.exit_code),
                "by_outcome": dict(Counter(_outcome(r) for r in self.records).most_common()),
                "by_format": dict(Counter(r.get("format") or "" for r in self.records if "error" not in r).most_common()),
                "top_findings": [{"rule": k, "count": n} for k, n in self.top_findings()],
                "slowest": [{"input": row["input"], "seconds": row["seconds"]} for row in self._top("seconds")],
                "largest": [{"input": row["input"], "size": row["size"]} for row in self._top("size")],
                "errors": [{"input": r.get("input"), "error": r["error"], "exit_code": r.get("exit_code")}
                           for r in self.records if "error" in r]}

    # Markdown: the summary tables, then one line per record
    @property
    def md_title(self) -> str:
        return f"statecli report: {len(self.records)} checkpoint(s), exit code {int(self.exit_code)}"

    def md_tables(self) -> list[tuple[tuple[str, ...], list[dict[str, Any]]]]:
        d = self.to_dict()
        return [(("outcome", "count"), [{"outcome": k, "count": n} for k, n in d["by_outcome"].items()]),
                (("format", "count"), [{"format": k, "count": n} for k, n in d["by_format"].items()]),
                (("rule", "count"), d["top_findings"]),
                (("input", "seconds"), d["slowest"]),
                (("input", "size"), d["largest"])]

    def issues(self) -> Iterator[Issue]:
        """Every finding of every record, and each error as an unreadable input (for SARIF)."""
        for r in self.records:
            path = str(r.get("input"))
            for f in r.get("findings") or ():
                verdict = _verdict(f)
                yield Issue(path, f["rule"], Level(f["level"]), f["location"], f["message"], verdict)
            if "error" in r:
                yield Issue(path, f"{r.get('command')}/unreadable", Level.ERROR, "read", str(r["error"]))


def _verdict(finding: dict[str, Any]) -> Verdict | None:
    v = finding.get("verdict")
    return Verdict(v) if v in {x.value for x in Verdict} else None


def junit_xml(report: BatchReport) -> str:
    """One test case per checkpoint: a failure for findings, an error for an unreadable input."""
    import xml.etree.ElementTree as ET

    suites = ET.Element("testsuites", name="statecli report")
    suite = ET.SubElement(suites, "testsuite", name=report.source or "statecli", tests=str(len(report.records)),
                          failures=str(sum(1 for r in report.records if "error" not in r and r.get("exit_code"))),
                          errors=str(sum(1 for r in report.records if "error" in r)))
    for r in report.records:
        case = ET.SubElement(suite, "testcase", classname=str(r.get("command")), name=str(r.get("input")),
                             time=str((r.get("run") or {}).get("seconds", 0)))
        if "error" in r:
            ET.SubElement(case, "error", message=str(r["error"])).text = str(r["error"])
        elif r.get("exit_code"):
            text = "; ".join(f"{f['rule']}: {f['message']}" for f in r.get("findings") or ()) or _outcome(r)
            ET.SubElement(case, "failure", message=_outcome(r)).text = text
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def report_html(report: BatchReport) -> str:
    """One self-contained page (the renderer's page and tables: escaped, no script, no fetch)."""
    from ..render.html import page, table

    body = [f"<h1>statecli report: {len(report.records)} checkpoint(s)</h1>"]
    for heads, rows in report.md_tables():
        body.append(table(list(heads), [[row[h] for h in heads] for row in rows]))
    body.append(table(list(report.columns), [[row[c] for c in report.columns] for row in report.rows()]))
    return page("statecli report", body)


def load_report(paths: Sequence[str]) -> BatchReport:
    """The records of one or more NDJSON files (a sharded run's outputs), the last record of an input kept."""
    import os

    from ..errors import BadInput
    from .runner import read_records

    by_id: dict[str, dict[str, Any]] = {}
    for p in paths:
        if not os.path.isfile(p):
            raise BadInput(p, "no such records file")
        for rec in read_records(p):
            by_id[rec["id"]] = rec
    return BatchReport(tuple(by_id.values()), ", ".join(paths))
