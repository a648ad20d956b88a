"""-o never replaces a device, FIFO or socket; a symbolic link is followed, not replaced."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()


def _ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "real.pt"
    torch.save({"w": torch.ones(2)}, path)
    return path


def test_fifo_and_device_targets_are_refused(tmp_path: Path) -> None:
    src = _ckpt(tmp_path)
    fifo = tmp_path / "out.pt"
    os.mkfifo(fifo)
    for target in (str(fifo), "/dev/null"):
        result = runner.invoke(app, ["convert", str(src), "-o", target, "--to", "pt"])
        assert result.exit_code == 2 and "not a regular file" in result.stderr, result.stderr
    assert fifo.is_fifo() and Path("/dev/null").is_char_device()


def test_in_place_through_a_link_rewrites_the_file_and_keeps_the_link(tmp_path: Path) -> None:
    src = _ckpt(tmp_path)
    link = tmp_path / "link.pt"
    link.symlink_to(src.name)
    result = runner.invoke(app, ["cast", str(link), "--dtype", "half", "--in-place", "-q"])
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == src.name
    assert torch.load(src, weights_only=True)["w"].dtype == torch.float16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".statecli")]
