"""Shared fixtures: paths and helpers for building checkpoints in tmp_path."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_checkpoints"

# PYTHONDONTWRITEBYTECODE (set on some CI machines) would make each `python -m statecli` the suite starts compile
# the package from source (~0.15 s, hundreds of times) and each xdist worker rewrite every test module again:
# the suite keeps bytecode as a default Python does (__pycache__/, ignored by git), its children included.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    sys.dont_write_bytecode = False


@pytest.fixture
def samples() -> Path:
    """The committed demo checkpoints. Missing ones fail: a skipped sample test hides a broken clone."""
    missing = [n for n in ("cnn.pt", "cnn.safetensors", "full_model.pt", "train_ckpt.pt", "transformer.pt")
               if not (SAMPLES / n).is_file()]
    assert not missing, f"sample_checkpoints/ lacks {missing}: run python sample_checkpoints/make_samples.py"
    return SAMPLES


def small_cnn() -> Any:
    """A conv + BatchNorm + linear module: parameters, buffers and num_batches_tracked in 7 keys."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.bn = torch.nn.BatchNorm2d(4)
            self.head = torch.nn.Linear(4, 2)

    return Net()


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    """small_cnn()'s state dict saved with torch.save (seeded)."""
    import torch

    torch.manual_seed(0)
    path = tmp_path / "cnn.pt"
    torch.save(small_cnn().state_dict(), path)
    return path


def flatten_torch(obj: object, prefix: str = "") -> dict[str, object]:
    """Independent reference flattening of a torch.load result: dotted names -> tensors."""
    import torch

    out: dict[str, object] = {}

    def has_tensor(x: object) -> bool:
        if isinstance(x, torch.Tensor):
            return True
        if isinstance(x, dict):
            return any(has_tensor(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return any(has_tensor(v) for v in x)
        return False

    def walk(x: object, name: str) -> None:
        if isinstance(x, torch.Tensor):
            out[name] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(x, (list, tuple)) and has_tensor(x):
            for i, v in enumerate(x):
                walk(v, f"{name}.{i}" if name else str(i))

    walk(obj, prefix)
    return out


@pytest.fixture(autouse=True)
def _no_inherited_terminal_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables fit COLUMNS when it is set; a test must not depend on the caller's terminal (pytest-xdist
    workers inherit COLUMNS=80). Tests that want a width pass it explicitly."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # once, before the xdist workers and the subprocesses start
        import compileall

        compileall.compile_dir(ROOT / "statecli", quiet=1, workers=2)


@pytest.fixture(autouse=True)
def _signal_dispositions() -> Any:
    """Ctrl-C and SIGTERM handlers as each test found them: a test of signals on a real process must not
    depend on what an earlier test in the same worker left behind."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        if handler is not None and signal.getsignal(sig) != handler:
            signal.signal(sig, handler)


@pytest.fixture(autouse=True, scope="session")
def _click_command_built_once() -> Any:
    """typer's CliRunner.invoke builds the click command from the Typer app on every call (~26 ms: most of a
    small command's test, ~1,500 calls): built once per app and set of registered commands."""
    import typer.testing

    build = typer.testing._get_command
    built: dict[tuple[int, ...], Any] = {}

    def cached(app: Any) -> Any:
        key = (id(app), *map(id, app.registered_commands), *map(id, app.registered_groups))
        if key not in built:
            built[key] = build(app)
        return built[key]

    typer.testing._get_command = cached
    yield
    typer.testing._get_command = build


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Model descriptions cached by the tests go to a temp folder, never the user's ~/.cache."""
    import os

    os.environ.setdefault("STATECLI_CACHE_DIR", str(tmp_path_factory.mktemp("statecli-cache")))


# The folders whose every test carries the marker of the same name (registered in pyproject.toml).
FOLDER_MARKERS = ("e2e", "security", "remote")

# Tests that take seconds each on a 2-core machine (measured with `pytest --durations`): `-m "not slow"`
# leaves them out of the quick loop. A file path marks every test in it; `path::name` one test (and all
# its parameters).
SLOW: frozenset[str] = frozenset({
    # subprocesses importing torch, transformers and torchao (the stderr of a real process is the point); a
    # 3 s connect timeout: each ~3-8 s on 2 cores, their classes keep quick cases (test_messages, test_batch)
    "cli/test_foreign_stderr.py",
    # 2-5 s each on 2 cores (measured with --durations): a transformers-loaded interpreter started for two
    # commands, the two-rank DCP save behind the DCP payload tests, 500 checkpoints and a real SIGTERM, two
    # compression bombs built, a Textual pilot typing filters, a headless browser
    "security/test_hf_remote_code.py::test_inspect_says_once_how_it_classified",
    "security/test_hf_remote_code.py::test_scan_json_names_the_code_files",
    "security/test_dcp_items.py",
    "cli/test_batch_sigterm.py::test_sigterm_keeps_the_finished_records_and_says_so",
    "security/test_bounds.py::test_diff_of_metadata_on_bombs_and_deep_headers",
    "cli/test_browse.py::test_filters_narrow_the_tree_and_the_table",
    "e2e/test_html_browser.py::test_html_diff_renders_offline_with_its_charts",
    "cli/test_batch.py::test_an_unreachable_dask_scheduler_is_one_line_within_the_connect_timeout",
    "cli/test_browse.py::test_a_filter_keeps_the_module_in_view",
    "e2e/test_docs.py::test_examples_show_real_current_output",
    "e2e/test_packaging.py::test_the_core_commands_run_without_torch",
    "e2e/test_pipes.py::test_own_codes_are_the_full_runs",
    "e2e/test_pipes.py::test_stdout_closed_early_is_not_an_error",
    "security/test_blowups.py::test_every_command_ends_within_budget",
    "security/test_blowups.py::test_shared_and_cyclic_outputs_stay_shared",
    "security/test_bounds.py::test_compression_bombs_and_member_counts_end_in_bounded_memory",
    "security/test_bounds.py::test_deep_config_and_index_json",
    "security/test_bounds.py::test_deep_safetensors_header_is_unreadable_not_a_crash",
    "security/test_bounds.py::test_fifty_thousand_members_still_read",
    "security/test_bounds.py::test_getattr_on_a_builder_global_needs_trust",
    "security/test_bounds.py::test_huge_declared_lengths_and_memo_indices",
    "security/test_bounds.py::test_index_naming_a_non_shard_is_refused",
    "security/test_bounds.py::test_int_past_str_limit_renders_in_every_format",
    "security/test_bounds.py::test_int_past_str_limit_text",
    "security/test_bounds.py::test_load_json_refuses_depth_before_recursing",
    "security/test_bounds.py::test_memo_index_check_passes_real_pickles",
    "security/test_bounds.py::test_newobj_on_allowlisted_classes_reads",
    "security/test_bounds.py::test_repetition_builds_are_bounded",
    "security/test_hf_remote_code.py::test_a_standard_model_type_classifies_against_the_standard_class",
    "security/test_hf_remote_code.py::test_hf_config_option_refuses_a_config_only_its_code_can_build",
    "security/test_hf_remote_code.py::test_no_command_prompts_or_imports_the_folders_code",
    "security/test_hf_remote_code.py::test_the_canary_fires_when_transformers_trusts_the_folder",
    "security/test_no_code_loaders.py::test_package_calls_no_code_running_loader",
    "security/test_scan_corpus.py::test_inspect_and_check_never_execute",
    "security/test_scan_corpus.py::test_load_refuses_dangerous",
    "security/test_sniff_loaders.py::test_npy_object_array_by_parsed_dtype",
    "security/test_sniff_loaders.py::test_pickle_from_any_first_opcode_is_read_and_refused",
    "security/test_sniff_loaders.py::test_tar_payload_after_raw_records_is_refused",
    "unit/analyses/test_perf_compare.py::test_identical_and_near_values_per_dtype",
    "unit/analyses/test_perf_noimport.py::test_value_commands_leave_torch_out",
    "unit/modeldef/test_hf_architectures.py::test_kinds_and_verdict_with_config",
    "unit/rewrite/test_cast_kernels.py::test_random_bits",
    "unit/rewrite/test_cast_kernels.py::test_random_values",
    "unit/rewrite/test_no_torch.py::test_outputs_load_in_torch",
    "unit/rewrite/test_no_torch.py::test_rewrites_leave_torch_out",
})


# Files (or folders) whose module- or session-scoped fixture is expensive (a generated corpus, transformers
# models, a two-rank DCP save, compression bombs, the S3/HTTP servers): under pyproject's `--dist loadgroup`
# each is one unit of work for pytest-xdist, so its fixture is built on one worker, not on each. The
# other quick tests go in runs of CHUNK from one file (one test per unit kept the workers waiting on
# the controller: 86 s against `--dist load`'s 70 s); a slow test is a unit of its own. The units with
# the most tests start the run, so the single slow tests end it.
ONE_WORKER: frozenset[str] = frozenset({
    "remote", "security/test_blowups.py", "security/test_bounds.py", "security/test_dcp_items.py",
    "security/test_scan_corpus.py", "unit/modeldef/test_hf_architectures.py", "unit/modeldef/test_report_wording.py",
    "unit/classify/test_inference_truth.py", "unit/formats/test_pt2.py", "unit/formats/test_dcp_training.py",
    "security/test_gguf_headers.py", "e2e/test_pipes.py", "cli/test_narrow_pty.py",
})
CHUNK = 16


def _is_slow(rel: str, nodeid: str) -> bool:
    """`rel` (the file under tests/) or its test `name` (parameters aside) is in SLOW."""
    name = nodeid.split("::", 1)[-1].split("[")[0]
    return rel in SLOW or f"{rel}::{name}" in SLOW


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        rel = item.path.relative_to(tests).as_posix()
        if rel.split("/")[0] in FOLDER_MARKERS:
            item.add_marker(rel.split("/")[0])
        if _is_slow(rel, item.nodeid):
            item.add_marker("slow")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than the cores. Many tests wait on a child process (a statecli command, a
    server, a Dask worker) for part of their time; a spare worker keeps the cores busy meanwhile (2 cores: the
    quick loop 60 s with 2 workers, 53 s with 3, 57 s with 4)."""
    return len(os.sched_getaffinity(0)) + 1  # the cores this process may use (taskset, cgroups' cpusets)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` with the units above. (xdist_group marks cannot group under pytest 9: xdist 3.8
    appends the group to `item._nodeid`, which pytest 9's nodeid no longer reads.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class Units(LoadGroupScheduling):
        scopes: dict[str, str] = {}
        counts: dict[str, int] = {}

        def _split_scope(self, nodeid: str) -> str:  # first called in collection order, then looked up
            if nodeid not in self.scopes:
                rel = nodeid.split("::", 1)[0].removeprefix("tests/")
                group = next((g for g in (rel, rel.split("/")[0]) if g in ONE_WORKER), None)
                if group is None and not _is_slow(rel, nodeid):
                    n = self.counts[rel] = self.counts.get(rel, -1) + 1
                    group = f"{rel}#{n // CHUNK}"
                self.scopes[nodeid] = group or nodeid
            return self.scopes[nodeid]

    return Units(config, log)
