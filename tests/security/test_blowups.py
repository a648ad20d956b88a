"""Object-graph blow-ups (issue 10): a few hundred bytes of pickle that share one container by 9**9
paths, refer to themselves, or nest 50,000 lists deep. Every command must end, in bounded time and
memory, with a listing that shows each shared object once and each cycle as a cycle, and a rewrite
must keep the sharing instead of unrolling it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from statecli.load import load_checkpoint
from statecli.pickle.graph import MAX_REPEATS, GraphRef, flatten, render_value, tensor_holders
from statecli.pickle.unpickler import StorageRef, TensorRef

from .. import warm
from .blowup_cases import shared_dict_with_tensor, write_cases

# These bound behaviour, not speed: a walker that follows paths instead of objects takes minutes and
# gigabytes on these files, so the limits are generous for a loaded CI machine (measured: every command
# well under 2 s of CPU; read commands ~40 MiB, rewrites ~245 MiB, all of it the torch import that a
# plain 3-tensor file costs too).
TIMEOUT_S = 20
MAX_RSS_MIB = 400
# Address-space cap on the command, so a regression fails here instead of swapping the machine.
_AS_LIMIT = 4 << 30



def _commands(p: Path, out: Path) -> dict[str, list[str]]:
    return {
        "inspect": ["inspect", str(p)],
        "inspect-json": ["inspect", str(p), "-f", "json"],
        "size": ["size", str(p)],
        "diff": ["diff", str(p), str(p)],
        "scan": ["scan", str(p)],
        "check": ["check", str(p)],
        "cast": ["cast", str(p), "--dtype", "half", "-o", str(out / "cast.pt")],
        "convert": ["convert", str(p), "-o", str(out / "conv.safetensors")],
        "strip": ["strip", str(p), "--pattern", "^nothing$", "-o", str(out / "strip.pt")],
        "move": ["move", str(p), "--device", "cpu", "-o", str(out / "move.pt")],
    }


def run_bounded(argv: list[str]) -> dict[str, Any]:
    """One statecli command as a process of its own (forked from a warm interpreter: tests/warm.py) under the
    address-space cap and the timeout, its peak RSS and CPU from wait4."""
    r = warm.run(argv, timeout=TIMEOUT_S, as_limit=_AS_LIMIT)
    json_ok = None
    if "json" in argv:
        try:
            json.loads(r.stdout)
            json_ok = True
        except ValueError:
            json_ok = False
    return {"code": r.returncode, "stdout_bytes": len(r.stdout.encode()), "stderr": r.stderr[-400:],
            "json_ok": json_ok, "rss_mib": r.rss_mib, "cpu_s": r.cpu_s}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_cases(tmp_path_factory.mktemp("blowups"))


ALL = ("inspect", "inspect-json", "size", "diff", "scan", "check", "cast", "convert", "strip", "move")
MATRIX = [(c, cmd) for c in ("shared-list", "shared-dict-tensor", "self-dict") for cmd in ALL]
MATRIX += [(c, cmd) for c in ("self-list", "deep-nest") for cmd in ("inspect-json", "check", "cast", "convert")]
# Past MAX_DEPTH levels a .pt rewrite refuses (exit 2, one line); torch.save could not write it either.
REFUSED = {("deep-nest", "cast")}


@pytest.mark.parametrize(("case", "command"), MATRIX)
def test_every_command_ends_within_budget(cases: dict[str, Path], tmp_path: Path, case: str, command: str) -> None:
    r = run_bounded(_commands(cases[case], tmp_path)[command])
    assert r["code"] != "timeout", f"{command} on {case} ran past {TIMEOUT_S} s"
    assert r["rss_mib"] < MAX_RSS_MIB, r
    want = 2 if (case, command) in REFUSED else 0
    assert r["code"] == want, r
    assert "internal error" not in r["stderr"] and "RecursionError" not in r["stderr"], r
    if want == 2:
        assert "levels deep" in r["stderr"], r
    if command == "inspect-json":
        assert r["json_ok"] and r["stdout_bytes"] < 1 << 20, r


def test_shared_and_cyclic_outputs_stay_shared(cases: dict[str, Path], tmp_path: Path) -> None:
    for case in ("shared-list", "shared-dict-tensor", "self-dict", "self-list"):
        out = tmp_path / f"{case}.pt"
        r = run_bounded(["cast", str(cases[case]), "--dtype", "half", "-o", str(out)])
        assert r["code"] == 0, r
        # Sharing kept: the output is as small as the input, not 9**9 copies.
        assert out.stat().st_size < 4 * cases[case].stat().st_size + 4096, (case, out.stat().st_size)
        got = torch.load(out, weights_only=True)
        if case == "shared-list":
            assert got["a"][0] is got["a"][8] and got["a"][0][0] is got["a"][3][5]
        elif case == "shared-dict-tensor":
            assert got["a"]["0"] is got["a"]["8"] and got["a"]["0"]["0"] is got["a"]["5"]["2"]
            assert got["w"].dtype is torch.float16
        elif case == "self-dict":
            assert got["self"] is got and got["w"].dtype is torch.float16
        else:
            assert got["meta"][1] is got["meta"]
        before = load_checkpoint(str(cases[case]))
        after = load_checkpoint(str(out))
        assert [e.name for e in after.entries] == [e.name for e in before.entries]


def test_listing_reports_cycles_and_shared_containers(cases: dict[str, Path]) -> None:
    ck = load_checkpoint(str(cases["self-dict"]))
    values = {e.name: e.value for e in ck.entries if e.tensor is None}
    assert values == {"self": "<cycle: refers back to the root>"}
    assert any("cycle" in n for n in ck.notes)
    ck = load_checkpoint(str(cases["shared-dict-tensor"]))
    shared = [e for e in ck.entries if e.value_type == "shared reference"]
    assert shared and all(str(e.value).startswith("<shared: same object as 'a.") for e in shared)
    assert sum(e.tensor is not None for e in ck.entries) <= MAX_REPEATS + 10
    assert any("shared" in n for n in ck.notes)
    meta = next(e for e in load_checkpoint(str(cases["self-list"])).entries if e.name == "meta")
    assert meta.value == [1, "<cycle: refers back to this value>"]


# -- the walkers in-process ------------------------------------------------------------------------

def _t() -> TensorRef:
    return TensorRef(StorageRef("0", "float32", "cpu", 4, True), "float32", (4,), (1,), 0)


def test_tensor_holders_is_linear_and_cycle_safe() -> None:
    t = _t()
    leaf: list[Any] = [t]
    x: Any = leaf
    for _ in range(40):  # 2**40 paths
        x = [x, x]
    cyc: dict[str, Any] = {"n": 1}
    cyc["me"] = cyc
    root = {"a": x, "b": cyc, "c": [cyc, [1, 2]]}
    holders = tensor_holders(root)
    assert id(root) in holders and id(x) in holders and id(leaf) in holders
    assert id(cyc) not in holders and id(root["c"]) not in holders


def test_flatten_lists_modest_sharing_and_refers_past_the_budget() -> None:
    t = _t()
    inner = {"w": t}
    modest = flatten({"a": inner, "b": inner}, "")
    assert [n for n, _ in modest] == ["a.w", "b.w"]  # as torch.load shows tied containers
    x: Any = {"t": t}
    for _ in range(30):
        x = {"l": x, "r": x}
    out = flatten({"x": x}, "")
    refs = [v for _, v in out if isinstance(v, GraphRef)]
    assert refs and all(r.kind == "shared" for r in refs)
    assert len(out) < 3 * MAX_REPEATS


def test_render_value_shows_each_shared_object_once() -> None:
    x: Any = {"v": 1}
    for _ in range(9):
        x = {str(i): x for i in range(9)}
    text = json.dumps(render_value(x))
    assert len(text) < 10_000 and "<shared: same object as '0" in text
    betas = (0.9, 0.999)
    groups = [{"lr": 0.1, "betas": betas}, {"lr": 0.01, "betas": betas}]
    assert render_value(groups) == [{"lr": 0.1, "betas": [0.9, 0.999]}, {"lr": 0.01, "betas": [0.9, 0.999]}]
    # 16**4 distinct leaves: past MAX_RENDERED, cut short and said so.
    distinct = [[[list(range(16)) for _ in range(16)] for _ in range(16)] for _ in range(16)]
    assert "value too large to show" in json.dumps(render_value(distinct))


def test_load_of_12_levels_is_bounded(tmp_path: Path) -> None:
    p = tmp_path / "d12.pt"
    torch.save(shared_dict_with_tensor(12, 9), p)  # 9**12 paths to one tensor
    ck = load_checkpoint(str(p))
    assert len(ck.entries) < 3 * MAX_REPEATS
