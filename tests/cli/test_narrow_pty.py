"""Narrow terminals, tested in a real pty (issue 21): at 60, 80 and 120 columns no name is wrapped or cut
and no line runs past the edge; at narrow widths the least important columns make room (a uniform device
moves into the title, evidence keeps its first word, numel goes), in inspect and in diff --by-module."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import termios
import threading
from pathlib import Path

import pytest
import torch

from .. import warm

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
NAMES = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.11.attention.output.LayerNorm.bias",
         "blocks.0.bn.running_mean", "embeddings.position_ids", "w"]


def _in_pty(args: list[str], columns: int, lines: int = 30) -> list[str]:
    """The screen lines `statecli args` prints on a pty of `columns` x `lines` (styles stripped): a process of
    its own with the pty as fds 0-2, forked from a warm interpreter (tests/warm.py)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")} | {"TERM": "xterm"}
    chunks: list[bytes] = []

    def read() -> None:  # while the command runs: a full pty buffer would block its writes
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave end closed
                break
            if not data:
                break
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        tty = os.ttyname(slave)
        code = warm.run_fds(args, (tty, tty, tty), kind="torch", env=env)["code"]
    finally:
        os.close(slave)
        reader.join(timeout=120)
        os.close(master)
    assert code in (0, 1)
    text = b"".join(chunks).decode("utf-8", "replace")
    # what stays on screen of each line: the text after its last carriage return (a progress bar redraws)
    return [ANSI.sub("", line.rstrip("\r")).split("\r")[-1] for line in text.split("\n")]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    sd = {"encoder.layer.0.attention.self.query.weight": torch.randn(64, 64),
          "encoder.layer.11.attention.output.LayerNorm.bias": torch.randn(64),
          "blocks.0.bn.running_mean": torch.randn(8), "embeddings.position_ids": torch.arange(512)[None],
          "w": torch.ones(2)}
    folder = tmp_path_factory.mktemp("pty")
    torch.save(sd, folder / "a.pt")
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}, folder / "b.pt")
    return folder / "a.pt", folder / "b.pt"


def _table(screen: list[str], head: str) -> list[str]:
    start = next(i for i, line in enumerate(screen) if line.startswith(head))
    end = next((i for i in range(start + 1, len(screen)) if not screen[i].startswith((" ", *NAMES[:4], "w "))),
               len(screen))
    return screen[start:end]


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_inspect_fits_and_keeps_names_whole(files: tuple[Path, Path], columns: int) -> None:
    screen = _in_pty(["inspect", str(files[0])], columns)
    assert all(len(line) <= columns for line in screen), "\n".join(screen)
    table = _table(screen, "name ")
    for name in NAMES:
        assert any(line.split()[0] == name for line in table if line.strip()), (name, "\n".join(screen))
    header = table[0].split()
    if columns < 120:  # narrow: what matters least makes room
        assert "numel" not in header and "device" not in header
        assert any("device cpu" in line for line in screen)
        assert "(float)" not in "\n".join(table)  # evidence is one word
    else:
        assert "numel" in header and "4,096" in "\n".join(table)


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_diff_by_module_fits_and_keeps_module_names_whole(files: tuple[Path, Path], columns: int) -> None:
    screen = _in_pty(["diff", str(files[0]), str(files[1]), "--by-module", "--depth", "4"], columns)
    assert all(len(line) <= columns for line in screen), "\n".join(screen)
    modules = {line.split()[0] for line in screen[screen.index(next(x for x in screen if x.startswith("module "))):]
               if line and not line.startswith(("module", "different", "equal"))}
    assert {"encoder.layer.0.attention", "encoder.layer.11.attention", "blocks.0.bn", "embeddings"} <= modules, (
        "\n".join(screen))
    header = next(x for x in screen if x.startswith("module ")).split()
    assert "cosine" in header and "changed" in header  # what matters most stays
