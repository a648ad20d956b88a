"""Pickles nested in each other's byte strings past MAX_NESTING: the depth is a finding at every level
it is reached from, kept apart from the junk a nested scan drops (never told by its wording)."""

from __future__ import annotations

import pickle

import pytest

from statecli.pickle.pickles import MAX_NESTING, Findings, scan_stream


def _nest(levels: int) -> bytes:
    """A pickle holding a class and the bytes of the next, `levels` deep (each level names a real
    global, so each nested scan counts)."""
    data = pickle.dumps(("bottom",), protocol=4)
    for _ in range(levels):
        data = pickle.dumps((dict, data), protocol=4)  # a GLOBAL builtins.dict, then the inner bytes
    return data


@pytest.mark.parametrize("levels", [MAX_NESTING + 2, MAX_NESTING * 3])
def test_depth_past_the_limit_is_one_finding_carried_to_the_top(levels: int) -> None:
    acc = Findings()
    scan_stream(_nest(levels), "data.pkl", acc)
    assert acc.too_deep and set(acc.too_deep) <= set(acc.problems)
    assert all(f"nested more than {MAX_NESTING} deep" in p for p in acc.too_deep)


def test_depth_within_the_limit_is_no_finding() -> None:
    acc = Findings()
    scan_stream(_nest(MAX_NESTING - 2), "data.pkl", acc)
    assert not acc.too_deep and not acc.problems
    assert sum(1 for g in acc.globals if g.name == "builtins.dict") == MAX_NESTING - 2
