"""One timed run of a command as a fresh process (wall seconds, peak RSS, CPU seconds), shared by the benchmarks."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(seconds, peak RSS MiB, CPU seconds user + system) of one run, under GNU time. Bytecode caching
    stays on (PYTHONDONTWRITEBYTECODE is dropped) as for anyone who installed statecli; exit 0 or 1 only."""
    env = {k: v for k, v in (env if env is not None else os.environ).items() if k != "PYTHONDONTWRITEBYTECODE"}
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    secs = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", proc.stderr))
    return secs, int(m.group(1)) / 1024 if m else float("nan"), cpu


def evict(paths: Iterable[Path]) -> None:
    """Drop the files' pages from the page cache (posix_fadvise DONTNEED: unprivileged, best effort)."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        except OSError:
            pass
