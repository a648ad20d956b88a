"""Time the README's test command from a fresh clone, and the quick loop, as a newcomer runs them.

Targets: the README's full test command (install + every test) <= 5 min and `pytest -m "not slow"` <= 60 s
on a quiet 2-core machine. The command is read from the README itself (the `python3 -m venv .venv && ...`
line), run in a `git clone` of this checkout's HEAD; then `python -m pytest -m "not slow"` twice (the first
run of a clone compiles and rewrites the test modules; the second is a developer's loop). Each row: wall
seconds, CPU seconds of the command and its children, and the machine's speed beside them (one fixed
pure-Python loop, timed before and after: a shared or throttled machine shows there, not as a regression).

    python benchmarks/bench_suite.py            # ~5 min on 2 cores
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_command() -> str:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()
             if line.startswith("python3 -m venv .venv &&") and "pytest" in line]
    assert len(lines) == 1, "the README's test command was not found"
    return lines[0]


def _speed() -> float:
    """Seconds for a fixed pure-Python loop: the machine's speed at the moment."""
    t = time.perf_counter()
    sum(range(30_000_000))
    return time.perf_counter() - t


def _timed(cmd: str, cwd: Path) -> tuple[float, float, int, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = [line for line in done.stdout.splitlines() if " passed" in line or " failed" in line]
    return wall, cpu, done.returncode, tail[-1] if tail else done.stderr.strip()[-200:]


def main() -> int:
    command = _readme_command()
    install, tests = command.split(" && .venv/bin/python -m pytest", 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="statecli-suite-") as tmp:
        clone = Path(tmp) / "statecli"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        print(f"machine speed (fixed loop): {_speed():.2f} s", flush=True)
        for name, cmd in (("install (README)", install), ("python -m pytest (README)", ".venv/bin/python -m pytest" + tests),
                          ('pytest -m "not slow", first', '.venv/bin/python -m pytest -m "not slow"'),
                          ('pytest -m "not slow", again', '.venv/bin/python -m pytest -m "not slow"')):
            wall, cpu, code, tail = _timed(cmd, clone)
            rows.append((name, wall, cpu, code, tail))
            print(f"{name:32} {wall:7.1f} s wall {cpu:7.1f} s CPU  exit {code}  {tail}", flush=True)
        print(f"machine speed (fixed loop): {_speed():.2f} s")
    full = rows[0][1] + rows[1][1]
    print(f"README command (install + tests): {full:.0f} s (target <= 300 s); quick loop {rows[3][1]:.0f} s (target <= 60 s)")
    return 0 if all(r[3] == 0 for r in rows) else 1


if __name__ == "__main__":
    os.environ.pop("COLUMNS", None)
    sys.exit(main())
