"""The GitHub Action (action.yml): its inputs are the ones docs/commands.md documents, and its check step,
run here as the runner would run it, writes the job summary and outputs and exits with check's code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors.numpy import save_file

from tests.conftest import ROOT

ACTION: dict[str, Any] = yaml.safe_load((ROOT / "action.yml").read_text())


def _readme_action_section() -> str:
    readme = (ROOT / "docs" / "commands.md").read_text()
    start = readme.index("### GitHub Action")
    return readme[start:readme.index("\n### ", start + 1)]


def test_action_is_composite_with_the_inputs_the_readme_documents() -> None:
    assert ACTION["runs"]["using"] == "composite"
    inputs = set(ACTION["inputs"])
    section = _readme_action_section()
    documented = set(re.findall(r"^\| `([\w-]+)` \|", section, re.M))
    assert documented == inputs, (documented, inputs)
    example = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    used = next(s for s in example["jobs"]["checkpoints"]["steps"] if "statecli@" in s.get("uses", ""))
    assert set(used["with"]) <= inputs
    assert "placeholder" in section and "uses: ./" in section
    assert "exit-code" in ACTION["outputs"]


def test_this_repository_runs_its_own_action_from_the_tree() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "checkpoints.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"] if s.get("uses") == "./"]
    assert steps and all(set(s.get("with", {})) <= set(ACTION["inputs"]) for s in steps)


def _step(step_id: str) -> dict[str, Any]:
    return next(s for s in ACTION["runs"]["steps"] if s.get("id") == step_id)


def _run_check_step(tmp_path: Path, inputs: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], str, str]:
    """The `check` step's own `run:` script with its `env:` mapping, `${{ inputs.X }}` filled in the
    way the runner does (defaults from action.yml), STATECLI_PYTHON set as the install step sets it."""
    step = _step("check")
    values = {name: inputs.get(name, spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    for key, expr in step["env"].items():
        env[key] = re.sub(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", lambda m: values[m.group(1)], expr)
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    summary.write_text("earlier step\n")  # the runner's file collects every step's summary: append only
    env.update(GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(output), GITHUB_ACTION_PATH=str(ROOT),
               GITHUB_ACTIONS="true", STATECLI_PYTHON=sys.executable)
    proc = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    return proc, summary.read_text(), output.read_text() if output.exists() else ""


def _fixtures(tmp_path: Path) -> tuple[Path, Path]:
    good, bad = tmp_path / "good.safetensors", tmp_path / "bad model.safetensors"
    save_file({"w": np.ones((2, 3), np.float32)}, str(good))
    save_file({"w": np.array([1.0, np.nan], np.float32), "b": np.zeros(2, np.float32)}, str(bad))
    return good, bad


def test_the_check_step_writes_summary_annotations_and_exit_code(tmp_path: Path) -> None:
    good, bad = _fixtures(tmp_path)
    proc, summary, output = _run_check_step(tmp_path, {"paths": "good.safetensors 'bad model.safetensors'",
                                                       "args": "--no-nan"})
    assert proc.returncode == 1, proc.stderr
    assert summary.startswith("earlier step\n")
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert rows[0] == "| result | file | reasons |"
    assert any(r.startswith("| ✅ | good.safetensors |") for r in rows), rows
    bad_row = next(r for r in rows if "bad model.safetensors" in r)
    assert bad_row.startswith("| ❌ |") and "no-nan" in bad_row
    assert "**Totals:** 2 file(s): 1 ✅, 1 ❌" in summary
    assert "True" not in summary and "False" not in summary
    assert output.strip() == "exit-code=1"
    assert "::error file=bad model.safetensors,title=statecli no-nan::" in proc.stdout
    assert "::error file=good.safetensors" not in proc.stdout


def test_the_check_step_passes_with_format_and_rules_file(tmp_path: Path) -> None:
    good, _ = _fixtures(tmp_path)
    (tmp_path / "rules.toml").write_text("[tool.statecli.check]\nno-nan = true\n")
    proc, summary, output = _run_check_step(tmp_path, {"paths": "good.safetensors", "rules": "rules.toml",
                                                       "format": "json"})
    assert proc.returncode == 0, proc.stderr
    assert '"passed": true' in proc.stdout  # the log in the asked format
    assert "| ✅ | good.safetensors |" in summary and "no-nan" not in summary.split("Totals")[0].split("| ✅")[0]
    assert output.strip() == "exit-code=0"


def test_an_unreadable_file_is_a_failed_row(tmp_path: Path) -> None:
    proc, summary, output = _run_check_step(tmp_path, {"paths": "missing.pt"})
    assert proc.returncode == 2
    assert "| ❌ | missing.pt | read: " in summary
    assert output.strip() == "exit-code=2"


def test_a_check_that_cannot_run_still_says_so_in_the_summary(tmp_path: Path) -> None:
    _fixtures(tmp_path)
    proc, summary, output = _run_check_step(tmp_path, {"paths": "good.safetensors", "rules": "nope.toml"})
    assert proc.returncode == 2
    assert "could not run (exit 2)" in summary and "nope.toml" in summary
    assert output.strip() == "exit-code=2"
