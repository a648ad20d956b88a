"""Bounded work on files under 1 MB (issue 19, items 6-8): compression bombs, thousands of members,
JSON nested past the recursion limit, ints past str()'s limit, shard names that recurse, getattr on
builder globals, allowlisted classes under NEWOBJ. Each command ends with a clear exit (or reads the
file) in bounded memory, never a traceback. Memory is asserted (behaviour); time is not."""

from __future__ import annotations

import functools
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from benchmarks.pickle_bytes import replace_member, torch_zip_bytes
from statecli.io.limits import MAX_JSON_DEPTH, TooDeep, load_json

from .bound_cases import (
    HUGE_LENGTHS,
    REPETITIONS,
    big_int_state_dict,
    deep_json_safetensors,
    extra_member_bomb,
    legacy_pickle,
    many_members,
    nested_zip_bomb,
    pkl_bomb,
    write_index,
)
from .test_blowups import run_bounded

MAX_RSS_MIB = 200  # the bound for any metadata command on any file under 1 MB
METADATA = (["scan"], ["inspect"], ["inspect", "-f", "json"], ["size"], ["check"])


def _run(argv: list[str]) -> dict[str, object]:
    r = run_bounded(argv)
    assert r["code"] != "timeout", r
    assert "internal error" not in str(r["stderr"]) and "Traceback" not in str(r["stderr"]), r
    assert "RecursionError" not in str(r["stderr"]) and "recursion" not in str(r["stderr"]), r
    assert float(r["rss_mib"]) < MAX_RSS_MIB, r  # type: ignore[arg-type]
    return r


BOMBS: dict[str, Callable[[], bytes]] = {
    "pkl-deflate": lambda: pkl_bomb(512), "extra-deflate": lambda: extra_member_bomb(900),
    "extra-bzip2": lambda: extra_member_bomb(256, zipfile.ZIP_BZIP2),
    "extra-lzma": lambda: extra_member_bomb(256, zipfile.ZIP_LZMA), "nested-zip": lambda: nested_zip_bomb(256),
    "many-members": lambda: many_members(9000)}


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Each bomb written when a test first asks for it: the six take ~9 s of CPU to compress, and the
    quick loop's diff test needs two of them."""
    folder = tmp_path_factory.mktemp("bombs")

    @functools.cache
    def bomb(name: str) -> Path:
        data = BOMBS[name]()
        assert len(data) < 1 << 20, (name, len(data))
        path = folder / f"{name}.pt"
        path.write_bytes(data)
        return path

    return bomb


@pytest.mark.parametrize("case", list(BOMBS))
@pytest.mark.parametrize("command", METADATA)
def test_compression_bombs_and_member_counts_end_in_bounded_memory(bombs: Callable[[str], Path], case: str,
                                                                   command: list[str]) -> None:
    r = _run([*command, str(bombs(case))])
    assert r["code"] == 3, r  # every case is a place a payload hides: refused, and a finding for scan


def test_a_bomb_is_named_as_one() -> None:
    import tempfile

    from statecli.analyses.scan import scan

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "b.pt"
        p.write_bytes(pkl_bomb(128))
        res = scan(str(p))
    assert res.exit_code == 3 and any("compression bomb" in x for x in res.problems), res


def test_fifty_thousand_members_still_read(tmp_path: Path) -> None:
    """Member counts are bounded by work, not a fixed cap: a 50,000-tensor archive reads."""
    from statecli.analyses.scan import scan
    from statecli.load import load_checkpoint

    p = tmp_path / "many.pt"
    torch.save({f"t{i}": torch.zeros(1) for i in range(50_000)}, p)
    assert scan(str(p)).exit_code == 0
    assert len(load_checkpoint(str(p)).entries) == 50_000


def test_deflated_data_pkl_within_limits_reads(tmp_path: Path) -> None:
    """A hand-zipped archive (data.pkl deflated at a normal ratio) is not a bomb."""
    src = torch_zip_bytes({"w": torch.ones(3)})
    with zipfile.ZipFile(__import__("io").BytesIO(src)) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    p = tmp_path / "deflated.pt"
    with zipfile.ZipFile(p, "w") as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name), data,
                        compress_type=zipfile.ZIP_DEFLATED if name.endswith("data.pkl") else zipfile.ZIP_STORED)
    assert _run(["inspect", str(p)])["code"] == 0


# -- JSON depth --------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 400_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_load_json_refuses_depth_before_recursing(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = opener * depth + "1" + closer * depth
    with pytest.raises(TooDeep):
        load_json(text)
    with pytest.raises(ValueError):  # unbalanced: json's error, never RecursionError
        load_json(opener * depth)


def test_load_json_keeps_brackets_inside_strings() -> None:
    assert load_json('{"a": "[[[[{{{{", "b": [1, {"c": "]]]\\"]"}]}') == {"a": "[[[[{{{{", "b": [1, {"c": ']]]"]'}]}
    assert load_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize("command", METADATA)
def test_deep_safetensors_header_is_unreadable_not_a_crash(tmp_path: Path, command: list[str]) -> None:
    p = tmp_path / "deep.safetensors"
    p.write_bytes(deep_json_safetensors())
    r = _run([*command, str(p)])
    assert r["code"] == 2, r
    assert command in (["scan"], ["check"]) or "nested more than" in str(r["stderr"]), r


def test_deep_config_and_index_json(tmp_path: Path) -> None:
    idx = tmp_path / "model.safetensors.index.json"
    idx.write_text('{"weight_map": {"w": "model.safetensors"}, "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}")
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    for cmd in (["scan"], ["inspect"]):
        assert _run([*cmd, str(idx)])["code"] == 2
    (tmp_path / "config.json").write_text('{"architectures": ' + "[" * 100_000 + "]" * 100_000 + "}")
    r = _run(["inspect", str(tmp_path / "model.safetensors")])
    assert r["code"] in (0, 2), r


# -- ints past str()'s limit ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["table", "json", "csv", "md", "html"])
def test_int_past_str_limit_renders_in_every_format(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / "bigint.pt"
    torch.save(big_int_state_dict(), p)
    r = _run(["inspect", str(p), "-f", fmt])
    assert r["code"] == 0, r


def test_int_past_str_limit_text(tmp_path: Path) -> None:
    from statecli.load import load_checkpoint

    p = tmp_path / "bigint.pt"
    torch.save({**big_int_state_dict(), 10 ** 5000: torch.ones(1)}, p)
    ck = load_checkpoint(str(p))
    values = {e.name: e.value for e in ck.entries}
    assert values["big"] == "<int of 5001 digits>"
    assert "<int of 5001 digits>" in {e.name for e in ck.entries}
    json.dumps([e.value for e in ck.entries])
    for cmd in (["size", str(p)], ["diff", str(p), str(p)], ["show", str(p), "big"], ["inspect", str(p), "--tree"]):
        assert _run(cmd)["code"] == 0, cmd


# -- shard names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shard", ["", ".", "..", "model.safetensors.index.json", "other.index.json", "sub",
                                   "/etc/passwd", "../x.safetensors", "a/b.safetensors"])
@pytest.mark.parametrize("command", [["scan"], ["inspect"]])
def test_index_naming_a_non_shard_is_refused(tmp_path: Path, shard: str, command: list[str]) -> None:
    p = write_index(tmp_path / "m", {"w": shard})
    (tmp_path / "m" / "sub").mkdir()
    (tmp_path / "m" / "other.index.json").write_text(json.dumps({"weight_map": {"w": p.name}}))
    r = _run([*command, str(p)])
    assert r["code"] in (2, 3), r


# -- getattr on builder globals, NEWOBJ on allowlisted classes --------------------------------------

def _g(m: str, n: str) -> bytes:
    return b"c" + m.encode() + b"\n" + n.encode() + b"\n"


def _s(x: str) -> bytes:
    return b"X" + struct.pack("<I", len(x)) + x.encode()


def _archive(tmp_path: Path, name: str, body: bytes, proto: bytes = b"\x80\x02") -> Path:
    p = tmp_path / f"{name}.pt"
    p.write_bytes(replace_member(torch_zip_bytes({}), "/data.pkl", proto + b"}" + _s("a") + body + b"s."))
    return p


@pytest.mark.parametrize(("module", "name"), [("torch.nn.parameter", "Parameter"), ("collections", "OrderedDict"),
                                               ("torch", "Size"), ("torch._utils", "_rebuild_tensor_v2"),
                                               ("collections", "Counter"), ("torch", "device"),
                                               ("builtins", "set"), ("_codecs", "encode"),
                                               ("builtins", "bytearray"), ("builtins", "complex")])
def test_getattr_on_a_builder_global_needs_trust(tmp_path: Path, module: str, name: str) -> None:
    p = _archive(tmp_path, name, _g("builtins", "getattr") + _g(module, name) + _s("mro") + b"\x86R)R")
    r = _run(["scan", str(p)])
    assert r["code"] in (1, 3), r
    # The readers agree with scan: refused (3) where scan calls it dangerous, read with a warning otherwise.
    assert _run(["inspect", str(p)])["code"] == (3 if r["code"] == 3 else 0)


def test_calling_a_plain_values_method_while_loading_needs_trust(tmp_path: Path) -> None:
    p = _archive(tmp_path, "dictget", _g("builtins", "getattr") + b"}" + _s("get") + b"\x86R" + _s("k") + b"\x85R")
    assert _run(["scan", str(p)])["code"] == 1


@pytest.mark.parametrize(("case", "body", "proto"), [
    ("newobj-od", _g("collections", "OrderedDict") + b")\x81" + _s("k") + b"K\x01s", b"\x80\x02"),
    ("newobj-counter", _g("collections", "Counter") + b")\x81", b"\x80\x02"),
    ("newobj-set", _g("builtins", "set") + b")\x81", b"\x80\x02"),
    ("newobj-size", _g("torch", "Size") + b"K\x02K\x03\x86\x85\x81", b"\x80\x02"),
    ("newobj-ex-od", _g("collections", "OrderedDict") + b")}\x92", b"\x80\x04"),
    ("newobj-bytearray", _g("builtins", "bytearray") + b")\x81", b"\x80\x02"),
])
def test_newobj_on_allowlisted_classes_reads(tmp_path: Path, case: str, body: bytes, proto: bytes) -> None:
    p = _archive(tmp_path, case, body, proto)
    import pickle as real_pickle

    with zipfile.ZipFile(p) as zf:
        real_pickle.loads(zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl"))))  # benign: loads
    for cmd in (["scan"], ["inspect"], ["inspect", "-f", "json"]):
        assert _run([*cmd, str(p)])["code"] == 0, (case, cmd)


# -- pickles whose few bytes declare huge lengths or memo slots --------------------------------------

@pytest.mark.parametrize("case", sorted(HUGE_LENGTHS))
@pytest.mark.parametrize("where", ["legacy", "data.pkl"])
def test_huge_declared_lengths_and_memo_indices(tmp_path: Path, case: str, where: str) -> None:
    body = HUGE_LENGTHS[case]
    p = tmp_path / f"{case}.pt"
    if where == "legacy":
        p.write_bytes(legacy_pickle(body))
    else:
        p.write_bytes(replace_member(torch_zip_bytes({}), "/data.pkl", legacy_pickle(body)))
    for cmd in (["scan"], ["inspect"], ["check"]):
        r = _run([*cmd, str(p)])
        assert r["code"] in (2, 3), (cmd, r)


def test_memo_index_check_passes_real_pickles() -> None:
    import io
    import pickle

    from statecli.pickle.memocheck import memo_problem

    buf = io.BytesIO()
    torch.save({f"layer.{i}.weight": torch.zeros(1) for i in range(2000)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert memo_problem(pkl) is None
    for proto in range(6):
        obj = [{"k": [i, str(i), (i, i)]} for i in range(70_000)]
        assert memo_problem(pickle.dumps(obj, protocol=proto)) is None, proto
    assert memo_problem(b"\x80\x02N" + b"r" + struct.pack("<I", 5 << 24) + b".") is not None
    assert memo_problem(b"(N" + b"p99999999\n" + b".") is not None
    # A string that looks like LONG_BINPUT is data, not an opcode.
    assert memo_problem(b"\x80\x02X\x05\x00\x00\x00r\x00\x00\x00\x05r" + struct.pack("<I", 1) + b".") is None


def test_a_payload_in_a_bzip2_member_is_named(tmp_path: Path) -> None:
    from .bound_cases import _info, _torch_zip

    payload = b"cos\nsystem\n(S'touch PWNED'\ntR."
    for method in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        p = tmp_path / f"m{method}.pt"
        p.write_bytes(_torch_zip(lambda zf, m=method: zf.writestr(_info("archive/extra.pkl", m), payload)))
        from statecli.analyses.scan import scan

        res = scan(str(p))
        assert res.exit_code == 3 and any(g.name == "os.system" for g in res.globals), res


@pytest.mark.parametrize("case", sorted(REPETITIONS))
@pytest.mark.parametrize("command", [["scan"], ["inspect"], ["inspect", "-f", "json"]])
def test_repetition_builds_are_bounded(tmp_path: Path, case: str, command: list[str]) -> None:
    p = tmp_path / f"{case}.pt"
    p.write_bytes(replace_member(torch_zip_bytes({}), "/data.pkl", REPETITIONS[case]))
    assert p.stat().st_size < 1 << 20
    assert _run([*command, str(p)])["code"] == 0


def test_diff_of_metadata_on_bombs_and_deep_headers(bombs: Callable[[str], Path], tmp_path: Path) -> None:
    p = tmp_path / "deep.safetensors"
    p.write_bytes(deep_json_safetensors())
    assert _run(["diff", str(bombs("pkl-deflate")), str(bombs("pkl-deflate"))])["code"] == 3
    assert _run(["diff", str(bombs("many-members")), str(bombs("many-members"))])["code"] == 3
    assert _run(["diff", str(p), str(p)])["code"] == 2
