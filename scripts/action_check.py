"""The GitHub Action's check step (action.yml): run `statecli check` on the inputs, add its Markdown
table to the job summary, annotate the files, and exit with check's own code. Standard library only:
it runs in the Action's fresh venv, and a test runs it with temp files for GITHUB_STEP_SUMMARY/OUTPUT."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys


def command(env: dict[str, str], summary: str | None) -> list[str]:
    """`statecli check` from the Action's inputs (INPUT_* as action.yml maps them)."""
    cmd = [sys.executable, "-m", "statecli", "check", *shlex.split(env.get("INPUT_PATHS", "") or ".")]
    if env.get("INPUT_RULES"):
        cmd += ["--config", env["INPUT_RULES"]]
    cmd += shlex.split(env.get("INPUT_ARGS", ""))
    cmd += ["--format", env.get("INPUT_FORMAT") or "table", "--github"]
    return cmd + (["--summary", summary] if summary else [])


def main() -> int:
    env = dict(os.environ)
    summary = env.get("GITHUB_STEP_SUMMARY") or None
    before = os.path.getsize(summary) if summary and os.path.exists(summary) else 0
    proc = subprocess.run(command(env, summary), stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr)
    if summary and (not os.path.exists(summary) or os.path.getsize(summary) == before):
        # check stopped before a result (bad usage, a rules file it cannot read): say so, not nothing
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        with open(summary, "a", encoding="utf-8") as f:
            f.write(f"statecli check: ❌ could not run (exit {proc.returncode})\n\n")
            if lines:
                f.write("```\n" + lines[-1].replace("```", "'''") + "\n```\n")
    if env.get("GITHUB_OUTPUT"):
        with open(env["GITHUB_OUTPUT"], "a", encoding="utf-8") as f:
            f.write(f"exit-code={proc.returncode}\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
