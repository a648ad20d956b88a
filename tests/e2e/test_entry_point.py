"""The console entry point (`statecli.cli:main`) builds only the named command's parameters: the others must
still be there for `--help`, a typo's suggestion and every command run through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "sample_checkpoints" / "cnn.pt"


def _main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from statecli.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def test_help_lists_every_command_and_a_typo_gets_a_suggestion() -> None:
    from statecli.cli import app

    names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands if c.callback}
    listed = _main("--help").stdout
    assert names and all(n in listed for n in names)
    typo = _main("inspct", str(SAMPLE))
    assert typo.returncode == 2 and "Did you mean 'inspect'" in typo.stderr


def test_a_named_command_runs_and_its_options_parse() -> None:
    run = _main("size", str(SAMPLE), "--depth", "2", "-q")
    assert run.returncode == 0 and "params" in run.stdout, run.stderr
    renamed = _main("rename", "--help")  # a command whose function name differs from its own (rename_keys)
    assert renamed.returncode == 0 and "rename [OPTIONS] PATH" in renamed.stdout
