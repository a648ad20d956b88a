"""Inference alone (names, dtypes and the sibling rules) measured against torch's own answer for every
transformers architecture that builds here (tests/data/kind_truth.json, written by
scripts/make_kind_truth.py from named_parameters()/named_buffers() of meta-built models), and against
frozen-BatchNorm models built from torch.nn and saved the ways people save them."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest

from statecli import classify
from statecli.state import Kind, TensorInfo

TRUTH = Path(__file__).resolve().parents[2] / "data" / "kind_truth.json"
WANT = {"p": Kind.PARAMETER, "b": Kind.BUFFER}


def _rows(arch: dict[str, Any]) -> list[tuple[str, str, int, TensorInfo]]:
    """(name, p|b|n, tensors it stands for, tensor) from the script's prefix-compressed rows."""
    out, prev = [], ""
    for common, rest, code, count, dtype, shape in arch["rows"]:
        name = prev[:common] + rest
        out.append((name, code, count, TensorInfo(dtype or "float32", tuple(shape))))
        prev = name
    return out


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TRUTH.read_text())
    return data


def test_inference_alone_is_right_for_99_5_percent_of_tensors(truth: dict[str, Any]) -> None:
    total = right = 0
    misses: collections.Counter[str] = collections.Counter()
    for arch_name, arch in truth["architectures"].items():
        saved = [r for r in _rows(arch) if r[1] != "n"]  # what a state_dict (so a file) holds
        answers = classify.infer_state([(name, t) for name, _, _, t in saved])
        for (name, code, count, _), (kind, ev) in zip(saved, answers):
            total += count
            if kind is WANT[code]:
                right += count
            else:
                misses[f"{arch_name}: {name} is a {WANT[code]}, inferred {kind} ({ev.detail})"] += count
    assert len(truth["architectures"]) >= 70
    assert right / total >= 0.995, f"{right}/{total} = {right / total:.4%}; misses:\n" + "\n".join(
        f"{n} x {m}" for m, n in misses.most_common(60))


def test_every_architecture_kept_or_its_failure_recorded(truth: dict[str, Any]) -> None:
    assert truth["skipped"], "the script records what does not build here"
    assert all(isinstance(why, str) and why for why in truth["skipped"].values())
    assert not set(truth["skipped"]) & set(truth["architectures"])
    assert all(a["rows"] for a in truth["architectures"].values())


# The names transformers registers with persistent=False (and, in a few models, persistent): in a file they
# were saved, so they are buffers, and the evidence says what the library does with them.
_LIBRARY_NP = ("inv_freq", "original_inv_freq", "position_ids", "token_type_ids", "relative_position_index",
               "relative_coords_table", "embed_scale", "normalizer")


def test_library_non_persistent_names_are_buffers_said_non_persistent(truth: dict[str, Any]) -> None:
    seen: collections.Counter[str] = collections.Counter()
    wrong = []
    for arch_name, arch in truth["architectures"].items():
        for name, code, _, t in _rows(arch):
            leaf = name.rsplit(".", 1)[-1]
            if leaf not in _LIBRARY_NP and not leaf.endswith("_inv_freq"):
                continue
            seen[f"{leaf} {code}"] += 1
            kind, ev = classify.infer_state([(name, t)])[0]
            if kind is not Kind.BUFFER or "non-persistent" not in ev.detail or not ev.inferred:
                wrong.append(f"{arch_name}: {name} -> {kind} ({ev})")
    assert not wrong, wrong[:20]
    # both readings occur in transformers: the rule must not call any of them a parameter
    assert seen["inv_freq n"] and seen["position_ids b"] and seen["relative_position_index b"], seen


@pytest.mark.parametrize("arch", ["llama", "encodec", "ibert", "detr", "deepseek_v3"])
def test_committed_truth_is_what_the_script_makes(truth: dict[str, Any], arch: str) -> None:
    transformers = pytest.importorskip("transformers")
    if transformers.__version__ != truth["transformers"]:
        pytest.skip(f"truth made with transformers {truth['transformers']}")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_kind_truth", TRUTH.parents[2] / "scripts" / "make_kind_truth.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.build(arch) == truth["architectures"][arch]
