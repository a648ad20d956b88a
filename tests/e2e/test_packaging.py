"""Installing statecli as a user would: the distribution name every install line uses, optional extras
named by one line when missing, one version source, the Python range CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from statecli import __version__
from statecli.extras import DISTRIBUTION, PROVIDED_BY, Extra, missing_extra
from tests.conftest import ROOT, SAMPLES

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Where a user or a hint may read an install line.
_SCANNED = ["statecli", "docs", "scripts", "benchmarks", "sample_checkpoints", "README.md", "CONTRIBUTING.md",
            "SECURITY.md", "CHANGELOG.md", ".pre-commit-hooks.yaml", "action.yml", ".github", "pyproject.toml", ".ci/run"]
_TEXT = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ""}
# `statecli` as a requirement: an extra (`statecli[tui]`), a direct URL (`statecli @ git+...`) or a
# version (`statecli==0.1`), not part of a longer name (torch-statecli[tui], OWNER/statecli@v1 are fine).
_OLD_REQUIREMENT = re.compile(r"(?<![\w./-])statecli\s*(\[|\s@|[=<>~!]=)")
_PIP_TARGETS = re.compile(r"pip install\s+(.*)")


def _files() -> list[Path]:
    out: list[Path] = []
    for name in _SCANNED:
        p = ROOT / name
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += [f for f in p.rglob("*") if f.is_file() and f.suffix in _TEXT and "__pycache__" not in f.parts]
    return out


def test_no_line_tells_a_user_to_install_the_old_name() -> None:
    """`statecli` on PyPI is an unrelated project: no install line, hint or requirement may name it."""
    bad = []
    for f in _files():
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            targets = [t.strip("'\"`;()") for m in _PIP_TARGETS.finditer(line) for t in m.group(1).split("#")[0].split()]
            if _OLD_REQUIREMENT.search(line) or "statecli" in targets:
                bad.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "install lines naming the old distribution:\n" + "\n".join(bad)


def test_every_install_line_of_ours_names_a_declared_extra() -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named = {m.group(1) for f in _files() for m in re.finditer(rf"{DISTRIBUTION}\[([\w,]+)\]", f.read_text(errors="replace"))}
    assert named, "no install line names the distribution"
    for group in named:
        assert set(group.split(",")) <= extras, group


def test_distribution_and_extras_agree_with_pyproject() -> None:
    project = PYPROJECT["project"]
    assert project["name"] == DISTRIBUTION
    assert {e.value for e in Extra} <= set(project["optional-dependencies"])
    core = " ".join(project["dependencies"])
    assert "torch" not in core, "torch must stay optional"
    assert any(r.startswith("torch") and "statecli" not in r for r in project["optional-dependencies"]["torch"])
    assert f"{DISTRIBUTION}[torch]" in project["optional-dependencies"]["hf"], "hf builds models: it needs torch"


def test_every_user_extra_maps_its_modules() -> None:
    """A new extra (gguf, onnx, ...) must be an Extra whose modules PROVIDED_BY knows, or a missing one
    would end a command as an 'internal error' instead of the line naming it."""
    groups = {k: v for k, v in PYPROJECT["project"]["optional-dependencies"].items() if k not in ("test", "dev")}
    assert set(groups) == {e.value for e in Extra}
    for extra, reqs in groups.items():
        for req in reqs:
            name = re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("-", "_")
            if name != DISTRIBUTION.replace("-", "_"):  # hf's own torch-statecli[torch]
                assert PROVIDED_BY.get(name) == extra, (extra, req)


def test_missing_extra_is_decided_by_module_name() -> None:
    assert missing_extra(ModuleNotFoundError("x", name="torch.distributed.checkpoint")).extra is Extra.TORCH  # type: ignore[union-attr]
    assert missing_extra(ModuleNotFoundError("x", name="s3fs")).extra is Extra.REMOTE  # type: ignore[union-attr]
    # a module of our own or of a core dependency missing is a broken install, not an extra to name
    assert missing_extra(ModuleNotFoundError("x", name="statecli.nothing")) is None
    assert missing_extra(ModuleNotFoundError("x", name=None)) is None
    assert set(PROVIDED_BY.values()) == set(Extra)


def _run_without(modules: list[str], args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess where importing each of `modules` fails as if it were not installed."""
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
            + f"sys.argv = ['statecli', *{args!r}]\nfrom statecli.cli import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize(("blocked", "args", "extra"), [
    (["torch"], ["inspect", str(SAMPLES / "cnn.pt"), "--model", f"{SAMPLES / 'models.py'}:SmallCNN"], Extra.TORCH),
    (["torch"], ["convert", str(SAMPLES / "cnn.safetensors"), "--to", "dcp", "-o", "OUT"], Extra.TORCH),
    (["textual"], ["browse", str(SAMPLES / "cnn.pt")], Extra.TUI),
    (["fsspec"], ["inspect", "s3://bucket/model.pt"], Extra.REMOTE),
])
def test_a_command_that_needs_a_missing_extra_names_it_in_one_line(
        tmp_path: Path, blocked: list[str], args: list[str], extra: Extra) -> None:
    p = _run_without(blocked, args, tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert f"pip install '{DISTRIBUTION}[{extra}]'" in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == [], "no partial output"


@pytest.mark.parametrize("args", [
    ["inspect", str(SAMPLES / "cnn.pt")],
    ["diff", str(SAMPLES / "cnn.pt"), str(SAMPLES / "cnn.safetensors")],
    ["diff", str(SAMPLES / "dtypes.pt"), str(SAMPLES / "dtypes.pt")],  # complex values: numpy compares them
    ["check", str(SAMPLES / "cnn.pt"), "--no-nan"],
    ["scan", str(SAMPLES / "legacy.pt")],
    ["cast", str(SAMPLES / "cnn.pt"), "--dtype", "half", "-o", "cnn16.safetensors"],
])
def test_the_core_commands_run_without_torch(tmp_path: Path, args: list[str]) -> None:
    p = _run_without(["torch"], args, tmp_path)
    assert p.returncode == 0, p.stderr


def test_one_version_source() -> None:
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "statecli.__version__"}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M), \
        "CHANGELOG.md has no section for the current version"
    assert "## [Unreleased]" in changelog
    # the pre-commit example pins the tag the release steps in CONTRIBUTING create for this version
    assert f"rev: v{__version__}" in (ROOT / "docs" / "commands.md").read_text()
    assert "git tag v" in (ROOT / "CONTRIBUTING.md").read_text()
    p = subprocess.run([sys.executable, "-m", "statecli", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert p.stdout.strip() == f"statecli {__version__}"


def test_requires_python_is_what_ci_runs() -> None:
    """requires-python and the classifiers claim exactly the Pythons CI runs: this suite's, and each
    version .ci/run smoke-tests the wheel under."""
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extra = re.search(r"for v in ([0-9. ]+); do  # the other Pythons requires-python admits", ci)
    assert extra, ".ci/run no longer smoke-tests the wheel on the other Pythons"
    runs = {f"{sys.version_info.major}.{sys.version_info.minor}", *extra.group(1).split()}
    minors = sorted(int(v.split(".")[1]) for v in runs)
    assert minors == list(range(minors[0], minors[-1] + 1)), runs  # no gap between the versions CI runs
    assert all(spec.contains(f"{v}.0") for v in runs)
    assert not spec.contains(f"3.{minors[0] - 1}.0") and not spec.contains(f"3.{minors[-1] + 1}.0")
    versions = {c.rsplit(":: ", 1)[1] for c in PYPROJECT["project"]["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert versions == runs


def test_license_and_package_data_are_declared() -> None:
    assert (ROOT / "LICENSE").is_file() and PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "statecli" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["statecli"]


def test_ci_installs_the_gguf_to_hf_oracle() -> None:
    """The GGUF -> HF tests importorskip accelerate (transformers' gguf_file loading needs it): CI
    installs `.[dev,hf]` with .ci/constraints.txt, so dev names it and the constraints pin it."""
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(d.split(">")[0].split("=")[0] == "accelerate" for d in dev), dev
    pins = (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
    assert any(p.startswith("accelerate==") for p in pins)
    assert "[dev,hf]" in (ROOT / ".ci" / "run").read_text()
