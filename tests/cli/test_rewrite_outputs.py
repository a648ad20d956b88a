"""Where rewrites write: file modes, dry runs without -o, stdout, full disks, read-only folders, stale
temp files, device claims of formats that store none, progress and -q/-v."""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file, save_file
from typer.testing import CliRunner

from statecli.cli import app
from statecli.io import atomic
from statecli.render import Output
from statecli.render.rewrite import write_progress
from statecli.rewrite.plan import load as load_plan
from statecli.rewrite.plan import plan
from statecli.rewrite.run import run
from statecli.rewrite.spec import CastSpec, Target

runner = CliRunner()


def _ok(args: list[str]) -> str:
    return _ok_both(args)[0]


def _ok_both(args: list[str]) -> tuple[str, str]:
    """stdout (the result) and stderr (the messages: warnings and notes)."""
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout, result.stderr


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "in.pt"
    torch.save({f"layer{i}.weight": torch.randn(64, 64) for i in range(4)}, path)
    return path


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_outputs_honour_the_umask(tmp_path: Path, ckpt: Path, umask: None) -> None:
    _ok(["cast", str(ckpt), "--dtype", "half", "-o", str(tmp_path / "h.safetensors")])
    assert _mode(tmp_path / "h.safetensors") == 0o640
    _ok(["convert", str(ckpt), "-o", str(tmp_path / "shards"), "--max-shard-size", "20KB"])
    assert _mode(tmp_path / "shards") == 0o750
    assert all(_mode(f) == 0o640 for f in (tmp_path / "shards").iterdir())


def test_in_place_keeps_the_mode(ckpt: Path, umask: None) -> None:
    os.chmod(ckpt, 0o644)
    _ok(["cast", str(ckpt), "--dtype", "half", "--in-place"])
    assert _mode(ckpt) == 0o644
    assert torch.load(ckpt, weights_only=True)["layer0.weight"].dtype == torch.float16


def test_dry_run_needs_no_output_and_reports_bytes(ckpt: Path) -> None:
    data = json.loads(_ok(["cast", str(ckpt), "--dtype", "half", "--dry-run", "-f", "json"]))
    assert data["output"] is None and data["after"] is None
    assert data["planned_tensor_bytes"] == 4 * 64 * 64 * 2 and data["before"]["tensor_bytes"] == 4 * 64 * 64 * 4
    assert "about 32,768 B" in _ok(["cast", str(ckpt), "--dtype", "half", "--dry-run"])
    assert runner.invoke(app, ["cast", str(ckpt), "--dtype", "half"]).exit_code == 2  # no -o, no --dry-run


def test_output_to_stdout(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a wrong `-o -` would write a file named '-' here
    result = runner.invoke(app, ["cast", str(ckpt), "--dtype", "half", "-o", "-", "--to", "safetensors"])
    assert result.exit_code == 0, result.stderr
    got = load(result.stdout_bytes)
    assert got["layer0.weight"].dtype == torch.float16 and "wrote stdout" in result.stderr
    quiet = runner.invoke(app, ["convert", str(ckpt), "-o", "-", "--to", "pt", "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    ref = torch.load(ckpt, weights_only=True)
    back = torch.load(io.BytesIO(quiet.stdout_bytes), weights_only=True)
    assert all(torch.equal(back[k], ref[k]) for k in ref)
    # Without --to the stream keeps the input's format (issue 21): .pt in, .pt out; .safetensors in, out
    no_to = runner.invoke(app, ["convert", str(ckpt), "-o", "-"])
    assert no_to.exit_code == 0 and not Path("-").exists(), no_to.stderr
    assert torch.equal(torch.load(io.BytesIO(no_to.stdout_bytes), weights_only=True)["layer0.weight"],
                       ref["layer0.weight"])
    st = runner.invoke(app, ["cast", str(ckpt), "--dtype", "half", "-o", "st.safetensors"])
    assert st.exit_code == 0, st.stderr
    again = runner.invoke(app, ["cast", "st.safetensors", "--dtype", "float32", "-o", "-"])
    assert again.exit_code == 0 and load(again.stdout_bytes)["layer0.weight"].dtype == torch.float32
    sharded = runner.invoke(app, ["convert", str(ckpt), "-o", "-", "--max-shard-size", "1MB"])
    assert sharded.exit_code == 2 and "--to" in sharded.stderr and not Path("-").exists()


def test_stdout_terminal_is_refused(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    from statecli.cli import rewrite_commands

    monkeypatch.setattr(sys, "stdout", Tty())
    with pytest.raises(Exception, match="terminal"):
        rewrite_commands._stdout(Target(output="-", to="pt"))


def _left(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".statecli")]


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = ckpt.read_bytes()
    out = tmp_path / "out" / "h.pt"
    out.parent.mkdir()
    # Room for the tensors but not the archive around them: the write itself fails with ENOSPC.
    monkeypatch.setattr(atomic, "SIMULATED", atomic.SimulatedDisk(free=4 * 64 * 64 * 4 + 100))
    result = runner.invoke(app, ["convert", str(ckpt), "-o", str(out)])
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and str(out.parent) in line and "not enough free space" in line and "free" in line
    assert "needs about 64.0 KiB, 64.1 KiB free" in line and "internal error" not in line
    assert not out.exists() and _left(out.parent) == [] and ckpt.read_bytes() == before
    # Too little for the tensors alone: refused before writing anything.
    monkeypatch.setattr(atomic, "SIMULATED", atomic.SimulatedDisk(free=1000))
    early = runner.invoke(app, ["cast", str(ckpt), "--dtype", "half", "-o", str(out)])
    assert early.exit_code == 2 and "needs about 32.0 KiB, 1000 B free" in early.stderr and atomic.SIMULATED.written == 0


def test_read_only_folder(tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: simulate the read-only mount instead
        monkeypatch.setattr(atomic, "SIMULATED", atomic.SimulatedDisk(read_only=True))
    else:
        ro.chmod(0o555)
    result = runner.invoke(app, ["convert", str(ckpt), "-o", str(ro / "x.safetensors")])
    ro.chmod(0o755)
    assert result.exit_code == 2 and "cannot write the output here" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and list(ro.iterdir()) == []


def test_stale_temp_files_of_a_killed_run_are_removed(tmp_path: Path, ckpt: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    prefix = atomic._temp_prefix().replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    (tmp_path / f"{prefix}abc.tmp").write_bytes(b"partial")
    (tmp_path / f"{prefix}dir").mkdir()
    live = tmp_path / f"{atomic._temp_prefix()}live.tmp"  # this process is alive: never touched
    live.write_bytes(b"x")
    foreign = tmp_path / ".statecli-old-00000000-1-x"
    foreign.mkdir()
    _, stderr = _ok_both(["convert", str(ckpt), "-o", str(tmp_path / "o.safetensors")])
    assert sorted(_left(tmp_path)) == sorted([live.name, foreign.name])
    assert "removed 2 temp file(s)" in stderr


def test_move_to_safetensors_claims_no_move(tmp_path: Path, samples: Path) -> None:
    data = json.loads(_ok(["move", str(samples / "cuda.pt"), "--device", "cpu", "-o", str(tmp_path / "c.safetensors"),
                           "-f", "json"]))
    assert not [c for c in data["changes"] if c["what"] == "moved"]
    assert any("records no device, so nothing was moved" in n for n in data["notes"])
    save_file({"w": torch.ones(2)}, str(tmp_path / "w.safetensors"))
    human, notes = _ok_both(["move", str(tmp_path / "w.safetensors"), "--device", "cuda:0", "-o",
                             str(tmp_path / "v.safetensors")])
    assert "moved" not in human and "records no device" in notes
    # a .pt output records the device: that move is real and reported
    pt = json.loads(_ok(["move", str(tmp_path / "w.safetensors"), "--device", "cuda:0", "-o", str(tmp_path / "v.pt"),
                         "-f", "json"]))
    assert [c["detail"] for c in pt["changes"] if c["what"] == "moved"] == ["cpu -> cuda:0"]
    assert load_file(str(tmp_path / "v.safetensors"))["w"].device.type == "cpu"


def test_run_reports_progress_over_bytes_written(tmp_path: Path, ckpt: Path) -> None:
    calls: list[tuple[int, int]] = []
    p = plan(*load_plan(str(ckpt), None), CastSpec(dtype="half"))
    run(p, Target(output=str(tmp_path / "h.safetensors")), progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1] == (4 * 64 * 64 * 2, 4 * 64 * 64 * 2)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_progress_bar_only_on_a_terminal_and_never_quiet() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    with write_progress(Output(), err=io.StringIO()) as cb:
        assert cb is None  # not a terminal
    tty = Tty()
    with write_progress(Output(), err=tty) as cb:
        assert cb is not None
        cb(10, 100)
    with write_progress(Output(quiet=True), err=Tty()) as cb:
        assert cb is None


def test_quiet_and_verbose_flags(ckpt: Path, tmp_path: Path) -> None:
    verbose = runner.invoke(app, ["convert", str(ckpt), "-o", str(tmp_path / "v.safetensors"), "-v"])
    assert verbose.exit_code == 0 and "done in" in verbose.stderr
    quiet = runner.invoke(app, ["strip", str(ckpt), "--pattern", "layer0", "-o", str(tmp_path / "q.pt"), "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_dry_run_names_what_a_flat_file_leaves_out(tmp_path: Path) -> None:
    src = tmp_path / "train.pt"
    torch.save({"model": {"w": torch.ones(2)}, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, src)
    result = runner.invoke(app, ["convert", str(src), "--to", "safetensors", "--dry-run", "-f", "json"])
    assert result.exit_code == 0, result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any("containers not written" in n and "epoch" in n and "optimizer" in n for n in notes)
