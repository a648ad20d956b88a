"""Re-run every `$ statecli ...` example in README.md and paste its real output below it.

    python scripts/update_readme.py          # rewrite README.md in place
    python scripts/update_readme.py --check  # exit 1 if any example's output is stale

Each example is a ```console block whose first line is `$ <command>`; the rest of the block is
replaced by the command's output (stdout and stderr, as a terminal of 120 columns shows them) and a
final `[exit N]` line when the exit code is not 0. Commands run from the repository root.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```console\n\$ (?P<cmd>[^\n]+)\n(?P<out>.*?)```", re.DOTALL)


def run(cmd: str) -> str:
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb", "GITHUB_ACTIONS": ""}
    exe = Path(sys.executable).parent
    env["PATH"] = f"{exe}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    out = "\n".join(line.rstrip() for line in out.splitlines())
    if proc.returncode:
        out += f"\n[exit {proc.returncode}]"
    return out + "\n"


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()

    def replace(m: re.Match[str]) -> str:
        cmd = m.group("cmd")
        shlex.split(cmd)  # fail early on a malformed example
        return f"```console\n$ {cmd}\n{run(cmd)}```"

    new = BLOCK.sub(replace, text)
    if "--check" in sys.argv:
        return int(new != text)
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
