"""SIGTERM in the middle of a batch run (review of issue 26): the records already appended stay, and the
one error line says so and how to finish, with SIGTERM's exit code; then --resume completes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.remote.corpus import safetensors_bytes

N = 500  # far more than run before the signal: the run must still be going when it comes


def test_sigterm_keeps_the_finished_records_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "many").mkdir()
    for i in range(N):
        (tmp_path / "many" / f"m{i:05d}.safetensors").write_bytes(safetensors_bytes(2, i))
    out = tmp_path / "kr.jsonl"
    cmd = [sys.executable, "-m", "statecli", "check", "many", "--no-nan", "--ndjson", str(out), "--jobs", "2",
           "--no-cache"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"NO_COLOR": "1", "COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 8:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    lines = out.read_text().splitlines()
    kept = [json.loads(line) for line in lines if line.endswith("}")]
    assert proc.returncode == 143, err
    assert 8 <= len(kept) < N, len(kept)
    last = err.strip().splitlines()[-1]
    assert "nothing was written" not in err and "Traceback" not in err
    assert f"interrupted; {len(kept)} record(s) kept in {out}; rerun with --resume to finish" in last, err
    done = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len({json.loads(line)["input"] for line in out.read_text().splitlines()}) == N
