"""Signals sent to real statecli processes (issue 21): SIGTERM exits 143 and Ctrl-C (SIGINT) 130, each with
one line on stderr and nothing left behind; temp files of a SIGKILLed writer are removed by the next
rewrite into the folder, unless their writer still runs (same pid and start time) or ran on another host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from statecli.io import atomic

STATECLI = [sys.executable, "-m", "statecli"]
_WAIT = 60.0  # seconds at most for a child to reach the state the test needs (a bound, not a timing)


def _until(ready: object, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _WAIT
    while not ready():  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "child never got there"
        time.sleep(0.02)


def _foreground() -> None:
    """In the child before exec: signals as a shell's foreground job has them (Ctrl-C and SIGTERM neither
    blocked nor ignored), whatever the test process's threads left behind."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_read_exits_with_its_code(tmp_path: Path, cnn: Path, sig: signal.Signals, code: int) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    # `inspect -` blocks reading stdin while the pipe stays open: a command provably mid-run
    proc = subprocess.Popen([*STATECLI, "inspect", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=os.environ | {"TMPDIR": str(spool)}, preexec_fn=_foreground)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(cnn.read_bytes()[:100])
    proc.stdin.flush()
    _until(lambda: any(p.is_dir() and (p / "stdin").exists() for p in spool.iterdir()), proc)
    proc.send_signal(sig)
    try:  # stdin stays open until it ends: the signal, not an end of input, is what ends the read
        proc.wait(timeout=_WAIT)
    finally:
        proc.kill()
        proc.stdin.close()
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == code, err
    # a read-only command writes nothing, so its line says no more than that it was interrupted
    assert err.decode().strip().splitlines() == ["statecli: error: interrupted"]
    assert out == b"" and list(spool.iterdir()) == []  # the spooled copy is gone too


def test_only_a_rewrite_says_nothing_was_written() -> None:
    from statecli.cli.app import _interrupted
    from statecli.errors import KeptInterrupt

    assert _interrupted(KeyboardInterrupt(), "cast") == "interrupted; nothing was written"
    assert _interrupted(KeyboardInterrupt(), "inspect") == _interrupted(KeyboardInterrupt(), "scan") == "interrupted"
    assert _interrupted(KeptInterrupt("3 record(s) kept in r.jsonl", True), "batch") == \
        "interrupted; 3 record(s) kept in r.jsonl"


_HOLD = """
import sys
from statecli.io import atomic
with atomic.atomic_file(sys.argv[1]) as tmp:
    open(tmp, "wb").write(b"partial")
    print(tmp, flush=True)
    sys.stdin.read()
"""


def test_temp_file_of_a_sigkilled_writer_is_swept_by_the_next_rewrite(tmp_path: Path, cnn: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", _HOLD, str(out / "w.pt")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    assert writer.stdout is not None
    left = Path(writer.stdout.readline().decode().strip())
    # while the writer lives, a rewrite into the folder leaves its temp file alone
    live = subprocess.run([*STATECLI, "cast", str(cnn), "--dtype", "half", "-o", str(out / "a.pt")],
                          capture_output=True, check=False)
    assert live.returncode == 0 and left.exists(), live.stderr
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert left.exists() and not (out / "w.pt").exists()  # SIGKILL: no cleanup ran
    swept = subprocess.run([*STATECLI, "cast", str(cnn), "--dtype", "half", "-o", str(out / "b.pt")],
                           capture_output=True, check=False)
    assert swept.returncode == 0, swept.stderr
    assert not left.exists() and b"removed 1 temp file(s)" in swept.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.pt", "b.pt"]


def test_a_reused_pid_does_not_keep_a_stale_temp_file(tmp_path: Path, cnn: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        start = atomic._start_time(other.pid)
        if start is None:
            pytest.skip("no process start times here (/proc)")
        host = atomic._host_tag()
        reused = tmp_path / f".statecli-{host}-{other.pid}-{start - 1}-abc.tmp"  # same pid, earlier process
        running = tmp_path / f".statecli-{host}-{other.pid}-{start}-def.tmp"  # that very process: alive
        foreign = tmp_path / f".statecli-{'0' * 8 if host != '0' * 8 else '1' * 8}-{other.pid}-1-ghi.tmp"
        for p in (reused, running, foreign):
            p.write_bytes(b"partial")
        torch.save({"w": torch.ones(2)}, tmp_path / "in.pt")
        got = subprocess.run([*STATECLI, "convert", str(tmp_path / "in.pt"), "-o", str(tmp_path / "o.safetensors")],
                             capture_output=True, check=False)
        assert got.returncode == 0, got.stderr
        assert not reused.exists() and running.exists() and foreign.exists()
    finally:
        other.kill()
        other.wait()


def test_temp_names_record_host_pid_and_start() -> None:
    name = atomic._temp_prefix() + "x.tmp"
    m = atomic._STALE.match(name)
    assert m is not None and m.group(1) == atomic._host_tag() and int(m.group(2)) == os.getpid()
    assert int(m.group(3)) == (atomic._start_time(os.getpid()) or 0)
