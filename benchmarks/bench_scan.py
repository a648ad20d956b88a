"""Compare `statecli scan` with picklescan and modelscan on the malicious-checkpoint corpus.

Builds the corpus (benchmarks/scan_corpus.py) in a temp dir, runs on every case, each as a fresh
process:

- `statecli scan CASE --format json` (the statecli next to this interpreter);
- `picklescan --path CASE` and `modelscan -p CASE -r json -o REPORT`, from a SEPARATE virtual
  environment (default /tmp/scanners-venv; create it with
  `python3 -m venv /tmp/scanners-venv && /tmp/scanners-venv/bin/pip install picklescan modelscan`),
  so neither is ever installed into the project's venv. A missing tool is reported as "n/a".

Prints a Markdown table (case, technique, expected, statecli verdict, picklescan, modelscan) and totals
(how many of the dangerous cases each tool flags), and writes it to benchmarks/scan_results.md.

A tool "flags" a case when it reports it unsafe: statecli exit 3 (dangerous or malformed), picklescan
"Dangerous globals: N" with N > 0 (whatever its exit status) or exit 1, modelscan any issue or exit 1.
Nothing is ever unpickled; the marker file a payload would create is checked at the end.

    .venv/bin/python benchmarks/bench_scan.py [--scanners-venv DIR] [--no-heavy] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.pickle_bytes import MARKER, Case  # noqa: E402
from benchmarks.scan_corpus import build_corpus  # noqa: E402

TIMEOUT = 300


@dataclass
class Outcome:
    text: str  # what goes in the table cell
    flagged: bool  # the tool's exit status says "unsafe"
    seconds: float = 0.0


@dataclass
class Row:
    case: Case
    results: dict[str, Outcome] = field(default_factory=dict)


def _run(cmd: list[str], cwd: str) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                           env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})
    except subprocess.TimeoutExpired:
        return -1, "timeout", time.perf_counter() - t0
    return p.returncode, p.stdout + p.stderr, time.perf_counter() - t0


def run_statecli(case: Case, work: str) -> Outcome:
    exe = str(Path(sys.executable).with_name("statecli"))
    rc, out, secs = _run([exe, "scan", case.path, "--format", "json"], work)
    try:
        doc = json.loads(out[out.index("{") if "{" in out and out.lstrip()[:1] == "{" else out.index("["):])
        verdict = (doc["files"] if isinstance(doc, dict) else doc)[0]["verdict"]
    except (ValueError, KeyError, IndexError, TypeError):
        verdict = f"error (exit {rc})"
    return Outcome(f"{verdict} ({rc})", rc == 3, secs)


def run_picklescan(exe: str, case: Case, work: str) -> Outcome:
    rc, out, secs = _run([exe, "--path", case.path], work)

    def count(label: str) -> int:
        m = re.search(rf"{label}: (\d+)", out)
        return int(m.group(1)) if m else 0

    dangerous, suspicious, scanned = count("Dangerous globals"), count("Suspicious globals"), count("Scanned files")
    trouble = "ERROR" in out or "could not parse" in out or "Traceback" in out
    if dangerous:
        text = f"dangerous x{dangerous}"
    elif suspicious:
        text = f"suspicious x{suspicious}"
    elif scanned == 0:
        text = "not scanned"
    elif trouble:
        text = "parse error"
    else:
        text = "clean"
    if trouble and dangerous + suspicious:
        text += " + error"
    return Outcome(f"{text} ({rc})", dangerous > 0 or rc == 1, secs)


def run_modelscan(exe: str, case: Case, work: str, n: int) -> Outcome:
    report = os.path.join(work, f"modelscan-{n}.json")
    rc, out, secs = _run([exe, "-p", case.path, "-r", "json", "-o", report], work)
    try:
        with open(report, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return Outcome(f"error ({rc})", rc == 1, secs)
    sev = {k: v for k, v in data["summary"]["total_issues_by_severity"].items() if v}
    scanned = data["summary"].get("scanned", {}).get("total_scanned", 0)
    if sev:
        text = ", ".join(f"{k} x{v}" for k, v in sev.items())
    elif data.get("errors"):
        text = "error"
    elif not scanned:
        text = "not scanned"
    else:
        text = "clean"
    return Outcome(f"{text} ({rc})", bool(sev) or rc == 1, secs)


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render(rows: list[Row], tools: list[str], versions: dict[str, str], wall: dict[str, float]) -> str:
    lines = [
        "# Scanner comparison on the malicious-checkpoint corpus",
        "",
        "Generated by `benchmarks/bench_scan.py` (corpus: `benchmarks/scan_corpus.py`). Cells: the tool's verdict and, in",
        "parentheses, its exit status. A tool *flags* a case when it reports it unsafe: statecli exit 3 (dangerous or",
        "malformed), picklescan dangerous globals > 0 or exit 1, modelscan any issue or exit 1. `expected` is the least",
        "severe verdict a correct scanner may give; **MISS** marks a dangerous case the tool does not flag.",
        "",
        "Versions: " + ", ".join(f"{t} {versions.get(t, 'n/a')}" for t in tools),
        "",
        "| case | technique | expected | " + " | ".join(tools) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in tools) + " |",
    ]
    for r in rows:
        cells = []
        for t in tools:
            o = r.results.get(t)
            if o is None:
                cells.append("n/a")
                continue
            miss = r.case.expected == "dangerous" and not o.flagged
            cells.append(("**MISS** " if miss else "") + _cell(o.text))
        lines.append(f"| {r.case.name} | {_cell(r.case.technique)} | {r.case.expected} | " + " | ".join(cells) + " |")
    dangerous = [r for r in rows if r.case.expected == "dangerous"]
    controls = [r for r in rows if r.case.name.startswith("control-")]
    lines += ["", "## Totals", "",
              "| tool | dangerous cases flagged | of which reach torch.load | controls flagged (false positives) "
              "| time, summed over cases |",
              "| --- | --- | --- | --- | --- |"]
    reach = [r for r in dangerous if r.case.reaches_torch_load]
    for t in tools:
        if not any(t in r.results for r in rows):
            lines.append(f"| {t} | n/a | n/a | n/a | n/a |")
            continue
        got = sum(1 for r in dangerous if r.results[t].flagged)
        got_reach = sum(1 for r in reach if r.results[t].flagged)
        fp = sum(1 for r in controls if r.results[t].flagged)
        lines.append(f"| {t} | {got} / {len(dangerous)} | {got_reach} / {len(reach)} | {fp} / {len(controls)} "
                     f"| {wall.get(t, 0):.1f} s |")
    statecli_strict = sum(1 for r in dangerous if r.results["statecli"].text.startswith("dangerous"))
    lines += ["", f"statecli verdict exactly `dangerous` (not only `malformed`): {statecli_strict} / {len(dangerous)}.",
              "Non-dangerous expectations (`needs-trust`, `malformed`) are not counted above; see the table.", ""]
    return "\n".join(lines)


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    return out.splitlines()[-1] if out else "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scanners-venv", default="/tmp/scanners-venv", help="venv holding picklescan and modelscan")
    ap.add_argument("--no-heavy", action="store_true", help="skip the 1 GiB (deflated) data.pkl case")
    ap.add_argument("--keep", help="build the corpus here and keep it (default: a temp dir, deleted)")
    ap.add_argument("--jobs", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "scan_results.md"))
    args = ap.parse_args(argv)

    bindir = Path(args.scanners_venv) / "bin"
    tools = ["statecli", "picklescan", "modelscan"]
    exes = {t: str(bindir / t) for t in ("picklescan", "modelscan") if (bindir / t).exists()}
    for t in ("picklescan", "modelscan"):
        if t not in exes:
            print(f"warning: {bindir / t} not found; {t} column will be n/a", file=sys.stderr)
    versions = {"statecli": _version([sys.executable, "-c", "import statecli; print(statecli.__version__)"])}
    pip = bindir / "pip"
    for t in exes:
        show = subprocess.run([str(pip), "show", t], capture_output=True, text=True).stdout if pip.exists() else ""
        m = re.search(r"^Version: (.+)$", show, re.M)
        versions[t] = m.group(1) if m else "?"

    with tempfile.TemporaryDirectory(prefix="statecli-scan-bench-") as tmp:
        corpus_dir = args.keep or os.path.join(tmp, "corpus")
        work = os.path.join(tmp, "work")
        os.makedirs(work)
        t0 = time.perf_counter()
        cases = build_corpus(corpus_dir, heavy=not args.no_heavy)
        print(f"built {len(cases)} cases in {time.perf_counter() - t0:.1f} s under {corpus_dir}", file=sys.stderr)
        rows = [Row(c) for c in cases]
        jobs: list[tuple[Row, str, Callable[[], Outcome]]] = []
        for i, r in enumerate(rows):
            jobs.append((r, "statecli", partial(run_statecli, r.case, work)))
            if "picklescan" in exes:
                jobs.append((r, "picklescan", partial(run_picklescan, exes["picklescan"], r.case, work)))
            if "modelscan" in exes:
                jobs.append((r, "modelscan", partial(run_modelscan, exes["modelscan"], r.case, work, i)))
        with ThreadPoolExecutor(args.jobs) as pool:
            futures: list[tuple[Row, str, Future[Outcome]]] = [(r, t, pool.submit(fn)) for r, t, fn in jobs]
            for r, t, fut in futures:
                r.results[t] = fut.result()
        wall = {t: sum(r.results[t].seconds for r in rows if t in r.results) for t in tools}
        ran = os.path.exists(os.path.join(corpus_dir, MARKER))

    text = render(rows, tools, versions, wall)
    if ran:
        text += "\n**A payload ran: the marker file exists.**\n"
    print(text)
    Path(args.results).write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.results}", file=sys.stderr)
    return 1 if ran else 0


if __name__ == "__main__":
    sys.exit(main())
