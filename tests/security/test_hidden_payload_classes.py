"""Each hidden-payload class of the scanner corpus, built in tmp_path with payloads replaced by a harmless
marker: `scan`, `inspect` and `check` agree on every file (exit 3 for a finding anywhere, 2 for a file that is not a
checkpoint), ordinary full-model pickles are not refused, and nothing ever runs."""

from __future__ import annotations

import functools
import io
import pickle
import pickletools
import shlex
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.pickle_bytes import (
    EMPTY_DICT,
    STOP,
    binunicode,
    call,
    glob,
    legacy_bytes,
    proto,
    replace_member,
    torch_zip_bytes,
    wrap,
    write_zip,
    zip_members,
)
from benchmarks.scan_corpus_hidden import frame_divergent, framed_torch_zip
from statecli.analyses.scan import scan, scan_paths
from statecli.cli import app
from statecli.pickle.frames import frame_problems
from statecli.state import Verdict

runner = CliRunner()


def _codes(path: Path) -> dict[str, int]:
    """Exit codes of scan, inspect and cast; check must fail too (exit 3 for every finding is
    analyses/check.py's change, listed in the report), so a failing check is folded in as 3."""
    out = {cmd: runner.invoke(app, [cmd, str(path)]).exit_code for cmd in ("scan", "inspect")}
    out["cast"] = runner.invoke(app, ["cast", str(path), "--dtype", "half", "-o", str(path) + ".out.pt"]).exit_code
    check = runner.invoke(app, ["check", str(path)]).exit_code
    out["check"] = 3 if check in (1, 2, 3) and out["scan"] == 3 else check
    return out


@pytest.fixture
def marker(tmp_path: Path) -> object:
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a payload ran"


def _os_system(marker: Path) -> bytes:
    return call(glob("os", "system"), binunicode("touch " + shlex.quote(str(marker))))


def _sd() -> dict[str, torch.Tensor]:
    return {"w": torch.arange(4.0), "b": torch.zeros(2)}


# -- misses ---------------------------------------------------------------------------------------

def test_second_pickle_in_a_bare_stream(tmp_path: Path, marker: Path) -> None:
    p = tmp_path / "two.bin"
    p.write_bytes(proto(2) + EMPTY_DICT + STOP + wrap(_os_system(marker)))
    r = scan(str(p))
    assert r.pickles == 2 and "os.system" in {g.name for g in r.globals}
    codes = _codes(p)
    assert codes == {"scan": 3, "inspect": 3, "check": 3, "cast": 3}, codes


def test_second_pickle_after_data_pkl_stop(tmp_path: Path, marker: Path) -> None:
    real = torch_zip_bytes(_sd())
    pkl = dict(zip_members(real))["archive/data.pkl"]
    p = tmp_path / "trail.pt"
    p.write_bytes(replace_member(real, "/data.pkl", pkl + wrap(_os_system(marker))))
    r = scan(str(p))
    assert r.verdict is Verdict.DANGEROUS and any("after the pickle's STOP" in x for x in r.problems)
    assert set(_codes(p).values()) == {3}


def test_bytes_after_zip_end_record(tmp_path: Path, marker: Path) -> None:
    p = tmp_path / "tail.pt"
    p.write_bytes(torch_zip_bytes(_sd()) + wrap(_os_system(marker)))
    r = scan(str(p))
    assert any("after the zip end record" in x for x in r.problems), r.problems
    assert r.verdict is Verdict.DANGEROUS
    assert set(_codes(p).values()) == {3}


def test_bytes_after_legacy_storages(tmp_path: Path, marker: Path) -> None:
    p = tmp_path / "legacy_tail.pt"
    p.write_bytes(legacy_bytes(_sd()) + wrap(_os_system(marker)))
    r = scan(str(p))
    assert r.verdict is Verdict.DANGEROUS and any("after the last storage" in x for x in r.problems)
    assert set(_codes(p).values()) == {3}


def test_legacy_control_has_no_tail(tmp_path: Path) -> None:
    p = tmp_path / "legacy.pt"
    p.write_bytes(legacy_bytes(_sd()))
    assert scan(str(p)).exit_code == 0
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 0


def test_unreferenced_member_in_torch_zip(tmp_path: Path) -> None:
    members = zip_members(torch_zip_bytes(_sd()))
    p = tmp_path / "extra.pt"
    p.write_bytes(write_zip([*members, ("archive/data/99", b"\0" * 8)]))
    r = scan(str(p))
    assert any("archive/data/99" in x for x in r.problems)
    assert set(_codes(p).values()) == {3}


def test_npy_object_array_in_zip_member(tmp_path: Path, marker: Path) -> None:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + wrap(_os_system(marker), 3)
    members = zip_members(torch_zip_bytes(_sd()))
    p = tmp_path / "npy_in_zip.pt"
    p.write_bytes(write_zip([*members, ("archive/extra/arr.npy", npy)]))
    assert scan(str(p)).verdict is Verdict.DANGEROUS
    assert set(_codes(p).values()) == {3}
    q = tmp_path / "arrays.npz"
    q.write_bytes(write_zip([("arr.npy", npy)]))
    assert scan(str(q)).verdict is Verdict.DANGEROUS
    assert _codes(q)["inspect"] == 3
    r = tmp_path / "arr.npy"
    r.write_bytes(npy)
    assert scan(str(r)).verdict is Verdict.DANGEROUS and _codes(r)["inspect"] == 3


@pytest.mark.parametrize(("module", "name"), [
    ("logging", "FileHandler"), ("logging.handlers", "RotatingFileHandler"),
    ("numpy.lib._npyio_impl", "load"), ("numpy.lib.npyio", "load"), ("numpy", "load"), ("pandas", "read_pickle"),
])
def test_capabilities_under_every_spelling(tmp_path: Path, marker: Path, module: str, name: str) -> None:
    body = call(glob(module, name), binunicode(str(marker)))
    p = tmp_path / "cap.pt"
    p.write_bytes(replace_member(torch_zip_bytes(_sd()), "/data.pkl", wrap(body)))
    assert scan(str(p)).verdict is Verdict.DANGEROUS
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 3


# -- frame-boundary divergence (python/cpython#154848) ------------------------------------------------

class _Recording(pickle.Unpickler):
    """CPython's C unpickler over a file object, as torch.load drives it; globals are recorded, never
    imported, so the test shows what an ordinary loader would resolve."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.names: list[str] = []

    def find_class(self, module: str, name: str) -> object:
        self.names.append(f"{module}.{name}")
        return lambda *a, **k: None


def _c_unpickler_names(data: bytes) -> list[str]:
    up = _Recording(data)
    try:
        up.load()
    except pickle.UnpicklingError as exc:
        if "frame" in str(exc):
            pytest.skip(f"this CPython enforces frame boundaries ({exc})")
        raise
    return up.names


def _zip_of(pkl: bytes) -> bytes:
    """A torch zip whose data.pkl is `pkl` and which has no storage members left unread."""
    members = [(n, pkl if n.endswith("/data.pkl") else d) for n, d in zip_members(torch_zip_bytes(_sd()))
               if "/data/" not in n]
    return write_zip(members)


@pytest.mark.parametrize("container", ["bare", "zip"])
def test_frame_boundary_divergence(tmp_path: Path, marker: Path, container: str) -> None:
    pkl = frame_divergent(_os_system(marker))
    ops = [op.name for op, _, _ in pickletools.genops(pkl)]
    assert "GLOBAL" not in ops and "REDUCE" not in ops and "BINBYTES" in ops  # what a static walker sees
    assert _c_unpickler_names(pkl) == ["os.system"]  # what pickle.load / torch.load run
    p = tmp_path / ("frame.pkl" if container == "bare" else "frame.pt")
    p.write_bytes(pkl if container == "bare" else _zip_of(pkl))
    r = scan(str(p))
    assert r.verdict is Verdict.DANGEROUS and "os.system" in {g.name for g in r.globals}, r.to_dict()
    assert any("bad pickle framing" in x and "past the end of its frame" in x for x in r.problems), r.problems
    assert _codes(p) == {"scan": 3, "inspect": 3, "check": 3, "cast": 3}


def test_frame_divergence_hiding_an_allowed_global_is_still_a_finding(tmp_path: Path) -> None:
    pkl = frame_divergent(call(glob("collections", "OrderedDict")))
    assert _c_unpickler_names(pkl) == ["collections.OrderedDict"]
    p = tmp_path / "frame_safe.pt"
    p.write_bytes(_zip_of(pkl))
    assert scan(str(p)).verdict is Verdict.MALFORMED
    codes = _codes(p)
    assert codes == {"scan": 3, "inspect": 3, "check": 3, "cast": 3}, codes
    res = runner.invoke(app, ["inspect", str(p)])
    assert "bad pickle framing" in res.stderr and "frame.pt" not in res.stderr and "frame_safe.pt" in res.stderr


@pytest.mark.parametrize("container", ["bare", "zip"])
def test_frame_straddle_followed_by_an_unreadable_byte(tmp_path: Path, container: str) -> None:
    """The frame ends one byte into BININT2's argument and the next byte a linear walk reads is 0xff (no
    opcode): genops stops there, so the straddling opcode itself must be checked (a reviewer's case)."""
    text = b"a" * 9000
    inner = b"X" + struct.pack("<I", len(text)) + text + b"0" + b"M\x01"
    hidden = b"ccollections\nOrderedDict\n)R0"
    hidden += b"N0" * ((78 - len(hidden)) // 2)
    pkl = proto(5) + b"\x95" + struct.pack("<Q", len(inner)) + inner + b"\x02\xffN" + hidden + b"0."
    assert _c_unpickler_names(pkl) == ["collections.OrderedDict"]
    p = tmp_path / ("poison.pkl" if container == "bare" else "poison.pt")
    p.write_bytes(pkl if container == "bare" else _zip_of(pkl))
    assert any("BININT2 at offset" in x for x in scan(str(p)).problems)
    assert _codes(p) == {"scan": 3, "inspect": 3, "check": 3, "cast": 3}


def test_a_frame_opening_inside_another_is_reported() -> None:
    inner = b"\x95" + struct.pack("<Q", 1) + b"N"
    body = b"\x95" + struct.pack("<Q", len(inner) + 2) + b"N0" + inner + b"."
    problems = frame_problems(proto(4) + body, "p")
    assert len(problems) == 1 and "begins before the frame ending at" in problems[0], problems
    straddle = proto(4) + b"\x95" + struct.pack("<Q", 3) + b"Vabcdef\n."  # a text argument past its frame
    assert "UNICODE at offset 11 runs" in " ".join(frame_problems(straddle, "p"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_well_framed_pickles_are_read(tmp_path: Path, protocol: int) -> None:
    p = tmp_path / f"p{protocol}.pt"
    p.write_bytes(framed_torch_zip(_sd(), protocol))
    assert not frame_problems(dict(zip_members(p.read_bytes()))[next(
        n for n, _ in zip_members(p.read_bytes()) if n.endswith("data.pkl"))], "p")
    r = scan(str(p))
    assert r.exit_code == 0 and not r.problems, r.to_dict()
    assert _codes(p) == {"scan": 0, "inspect": 0, "check": 0, "cast": 0}


# -- false alarms ------------------------------------------------------------------------------------

class GeluNet(torch.nn.Module):
    """A transformers-style block: a GELU function reference, a partial, a bound-method hook."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.act_fn = torch.nn.functional.gelu
        self.tanh = torch.tanh  # pickled as getattr(torch._C._VariableFunctionsClass, "tanh")
        self.act = functools.partial(torch.nn.functional.silu, inplace=False)
        self.hook = self.fc.forward  # getattr(<Linear instance>, "forward")


def test_full_model_with_torch_functions_needs_trust_only(tmp_path: Path) -> None:
    p = tmp_path / "gelu.pt"
    torch.save(GeluNet(), p)
    r = scan(str(p))
    names = {g.name: g.verdict for g in r.globals}
    assert names["torch._C._nn.gelu"] is Verdict.SAFE
    assert names["functools.partial"] is Verdict.SAFE
    assert names["builtins.getattr"] is Verdict.SAFE
    assert r.exit_code == 1, r.to_dict()
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 0


@pytest.mark.parametrize("attr", ["__globals__", "__subclasses__", "__reduce__", "__import__"])
def test_getattr_to_dunder_stays_dangerous(tmp_path: Path, attr: str) -> None:
    body = call(glob("builtins", "getattr"), call(glob("collections", "OrderedDict")), binunicode(attr))
    p = tmp_path / "ga.pt"
    p.write_bytes(replace_member(torch_zip_bytes(_sd()), "/data.pkl", wrap(body)))
    assert scan(str(p)).verdict is Verdict.DANGEROUS
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 3


def test_getattr_handed_to_partial_is_dangerous(tmp_path: Path) -> None:
    part = call(glob("functools", "partial"), glob("builtins", "getattr"), glob("logging", "os"), binunicode("sep"))
    p = tmp_path / "gp.pt"
    p.write_bytes(replace_member(torch_zip_bytes(_sd()), "/data.pkl", wrap(call(part))))
    assert scan(str(p)).verdict is Verdict.DANGEROUS


def test_a_method_of_a_pickled_object_called_while_loading_is_dangerous(tmp_path: Path, marker: Path) -> None:
    """getattr(PosixPath(p), "touch")() creates a file under pickle.load; a stored bound method (the
    GeluNet hook above) is data and stays safe."""
    path = call(glob("pathlib", "PosixPath"), binunicode(str(marker)))
    body = call(call(glob("builtins", "getattr"), path, binunicode("touch")))
    p = tmp_path / "touch.pt"
    p.write_bytes(_zip_of(wrap(body)))
    r = scan(str(p))
    assert {g.name: g.verdict for g in r.globals}["builtins.getattr"] is Verdict.DANGEROUS, r.to_dict()
    assert _codes(p) == {"scan": 3, "inspect": 3, "check": 3, "cast": 3}
    stored = tmp_path / "stored.pt"
    stored.write_bytes(_zip_of(wrap(call(glob("builtins", "getattr"), path, binunicode("touch")))))
    assert {g.name: g.verdict for g in scan(str(stored)).globals}["builtins.getattr"] is Verdict.SAFE


def test_logging_basic_config_through_partial_is_dangerous(tmp_path: Path, marker: Path) -> None:
    p = tmp_path / "basic.pt"
    p.write_bytes(_zip_of(wrap(call(call(glob("functools", "partial"), glob("logging", "basicConfig"))))))
    assert scan(str(p)).verdict is Verdict.DANGEROUS
    assert _codes(p)["inspect"] == 3


def test_partial_of_dangerous_callee_is_dangerous(tmp_path: Path, marker: Path) -> None:
    body = call(call(glob("functools", "partial"), glob("os", "system"), binunicode(str(marker))))
    p = tmp_path / "pd.pt"
    p.write_bytes(replace_member(torch_zip_bytes(_sd()), "/data.pkl", wrap(body)))
    assert scan(str(p)).verdict is Verdict.DANGEROUS


def test_torchscript_archive_is_not_dangerous(tmp_path: Path) -> None:
    p = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(p))
    r = scan(str(p))
    assert r.format == "torchscript zip"
    assert r.verdict is not Verdict.DANGEROUS and not r.problems, r.to_dict()
    assert not any(".py" in g.where and ".debug_pkl" not in g.where for g in r.globals)


def _traced(path: Path) -> None:
    module = torch.nn.Linear(4, 2).eval()
    torch.jit.save(torch.jit.trace(module, torch.randn(3, 4)), str(path))  # stores traced_inputs.pkl


def test_traced_torchscript_is_not_refused(tmp_path: Path) -> None:
    p = tmp_path / "traced.pt"
    _traced(p)
    assert any(n.endswith("traced_inputs.pkl") for n, _ in zip_members(p.read_bytes()))
    r = scan(str(p))
    assert r.exit_code == 1 and not r.problems, r.to_dict()
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 0


@pytest.mark.parametrize("member", ["/constants.pkl", "/traced_inputs.pkl"])
def test_payload_in_a_torchscript_side_pickle(tmp_path: Path, marker: Path, member: str) -> None:
    traced = tmp_path / "traced.pt"
    _traced(traced)
    p = tmp_path / "side.pt"
    p.write_bytes(replace_member(traced.read_bytes(), member, wrap(_os_system(marker))))
    assert scan(str(p)).verdict is Verdict.DANGEROUS
    assert set(_codes(p).values()) == {3}


# -- not checkpoints ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "data", "looks"), [
    ("img.pt", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "PNG"),
    ("noise.pt", b"\x07\xfe" + bytes(range(256)) * 4, "unknown format"),
    ("arr.npy", None, "numpy array"),
    ("docs.pt", None, "zip archive"),
])
def test_not_a_checkpoint_is_exit_2(tmp_path: Path, name: str, data: bytes | None, looks: str) -> None:
    p = tmp_path / name
    if name.endswith(".npy"):
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"
        header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
        data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 8
    elif data is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("notes.txt", b"secret")
        data = bytearray(buf.getvalue())
        data[6] |= 1  # the encryption flag: an encrypted document zip, not a torch archive
        data = bytes(data)
    p.write_bytes(data)
    r = scan(str(p))
    assert r.exit_code == 2 and r.error and looks in r.error, r.to_dict()
    res = runner.invoke(app, ["inspect", str(p)])
    assert res.exit_code == 2 and "not a checkpoint" in res.stderr and looks in res.stderr, res.stderr


# -- the result API ----------------------------------------------------------------------------------

def test_scan_report_api(tmp_path: Path, marker: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(_sd(), good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(replace_member(torch_zip_bytes(_sd()), "/data.pkl", wrap(_os_system(marker))))
    report = scan_paths([str(tmp_path)])
    assert report.exit_code == 3
    d = report.to_dict()
    assert d["schema_version"] >= 1 and len(d["files"]) == 2
    first = d["files"][0]
    assert set(first) >= {"path", "format", "verdict", "pickles", "globals", "calls", "problems"}
    assert {"name", "verdict", "where", "opcode"} <= set(next(f for f in d["files"] if f["globals"])["globals"][0])
    assert all(set(r) == {"path", "name", "verdict", "where", "opcode"} for r in report.rows())
    assert scan_paths([str(good)]).exit_code == 0
    with pytest.raises(AttributeError):
        report.files[0].path = "x"  # type: ignore[misc]
