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

import pytest

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


def test_a_signal_during_a_run_is_noted_not_raised_inside_the_pool() -> None:
    """SIGTERM and Ctrl-C while records are being made set what the run loop reads between records (an
    exception raised inside concurrent.futures' submit/wait could leave its lock held and shutdown waiting
    forever); the handlers before the run come back after it, and an ignored Ctrl-C stays ignored."""
    from statecli.batch.runner import _signals_stop_the_run
    from statecli.errors import Terminated

    def before(signum: int, frame: object) -> None:
        raise AssertionError("the run's handler was not in place")

    old = signal.signal(signal.SIGTERM, before), signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _signals_stop_the_run() as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs in the main thread at the next bytecode
            assert caught == [signal.SIGTERM]
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            with pytest.raises(Terminated):  # a second one means it: raised at once
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
