"""CI outputs of `check`: JUnit XML for test reporters, GitHub Actions annotations and the job summary."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

from ..vocab import CheckRule

if TYPE_CHECKING:
    from ..analyses.check import CheckResult, Finding


def junit_xml(result: CheckResult) -> str:
    import xml.etree.ElementTree as ET

    suites = ET.Element("testsuites", name="statecli check")
    by_path: dict[str, list[Finding]] = {}
    for f in result.findings:
        by_path.setdefault(f.path, []).append(f)
    for path, _ in result.errors + result.unsafe:
        by_path.setdefault(path, [])
    for path, findings in by_path.items():
        errors = [m for p, m in result.errors + result.unsafe if p == path]
        suite = ET.SubElement(suites, "testsuite", name=path, tests=str(len(findings) + len(errors)),
                              failures=str(sum(1 for f in findings if not f.passed)), errors=str(len(errors)))
        for f in findings:
            case = ET.SubElement(suite, "testcase", classname=path, name=f.rule)
            if not f.passed:
                ET.SubElement(case, "failure", message=f.reason).text = f.reason
        for m in errors:
            case = ET.SubElement(suite, "testcase", classname=path, name=CheckRule.READ)
            ET.SubElement(case, "error", message=m).text = m
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def github_annotations(result: CheckResult) -> list[str]:
    def esc(s: str) -> str:
        return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def esc_prop(s: str) -> str:
        return esc(s).replace(":", "%3A").replace(",", "%2C")

    lines = [f"::error file={esc_prop(f.path)},title={esc_prop('statecli ' + f.rule)}::{esc(f.reason)}"
             for f in result.findings if not f.passed]
    lines += [f"::error file={esc_prop(p)},title=statecli read::{esc(m)}" for p, m in result.errors]
    lines += [f"::error file={esc_prop(p)},title=statecli unsafe::{esc(m)}" for p, m in result.unsafe]
    return lines


def write_junit_xml(result: Any, out: IO[str]) -> None:
    """`--format junit`: a check result's JUnit XML, or a result's own `junit_xml()` (a batch report)."""
    from ..errors import UsageError

    if type(result).__name__ == "CheckResult":
        out.write(junit_xml(result) + "\n")
    elif hasattr(result, "junit_xml"):
        out.write(result.junit_xml() + "\n")
    else:
        raise UsageError(None, "--format junit is available for check and report", "use --format json here")


def write_junit(result: CheckResult, path: str) -> None:
    """The JUnit XML report, written atomically (a CI artifact is never half a file)."""
    from ..io.atomic import atomic_file

    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(junit_xml(result))


def append_summary(result: CheckResult, path: str) -> None:
    """The Markdown table of `check -f md`, appended: GitHub's job summary file collects every step's."""
    from ..errors import UsageError
    from .machine import write_md

    try:
        with open(path, "a", encoding="utf-8") as f:
            write_md(result, f)
    except OSError as exc:
        raise UsageError(path, f"cannot write the summary: {exc.strerror or exc}") from exc


def write_ci_outputs(result: CheckResult, junit: str | None, summary: str | None, annotate: bool) -> None:
    """What `check` adds for CI after its own output: JUnit XML, the job summary, annotations on stdout."""
    if junit:
        write_junit(result, junit)
    if summary:
        append_summary(result, summary)
    if annotate:
        import sys

        for line in github_annotations(result):
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
