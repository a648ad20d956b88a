"""Issue 19 review, classes 1 and 3: a global chosen while loading, and file access under every name.

1. A STACK_GLOBAL whose module or name is not a constant string of the stream (built by min, max,
   format, next(iter(...)), str.strip, dict.get, str(), a persistent id ...) picks its global at load
   time: dangerous, in scan and in every reader, bare and inside a torch zip, whatever it resolves to.
2. pathlib beyond constructing a path, torch.distributed.checkpoint beyond its metadata dataclasses,
   and the other file-writing and nested-loader names are dangerous, not needs-trust."""

from __future__ import annotations

import io
import pathlib
import pickle
import shlex
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.analyses.scan import scan
from statecli.cli import app
from statecli.pickle.verdict import DCP_TRUSTED, Verdict, verdict

runner = CliRunner()


def V(s: str) -> bytes:  # noqa: N802 - the UNICODE opcode's letter
    return b"V" + s.encode() + b"\n"


# Ways to build a string while loading that the reviewer showed pickle.load accepts as an operand.
BUILT = {
    "min": lambda s: b"cbuiltins\nmin\n(" + V(s) + V("zzzzzzz") + b"tR",
    "max": lambda s: b"cbuiltins\nmax\n(" + V(s) + V("") + b"tR",
    "format": lambda s: b"cbuiltins\nformat\n(" + V(s) + b"tR",
    "next_iter": lambda s: b"cbuiltins\nnext\n(cbuiltins\niter\n((" + V(s) + b"ltRtR",
    "str_strip": lambda s: b"cbuiltins\nstr.strip\n(" + V(" " + s + " ") + b"tR",
    "dict_get": lambda s: b"cbuiltins\ndict.get\n((d" + V("k") + V(s) + b"s" + V("k") + b"tR",
    "str": lambda s: b"cbuiltins\nstr\n(" + V(s) + b"tR",
    "memo_of_min": lambda s: b"cbuiltins\nmin\n(" + V(s) + V("zzzzzzz") + b"tRq\x00" + b"0h\x00",
}


def _computed_global(mk: object, module: str, name: str, arg: str) -> bytes:
    build = mk  # type: ignore[assignment]
    return b"\x80\x04" + build(module) + build(name) + b"\x93(" + V(arg) + b"tR."  # type: ignore[operator]


def _in_torch_zip(body: bytes, path: Path) -> None:
    """`body` as the value of key "x" of a torch.save'd dict's data.pkl."""
    buf = io.BytesIO()
    torch.save({}, buf)
    pk = body[:2] + b"}(Vx\n" + body[2:-1] + b"u."
    with zipfile.ZipFile(buf) as z, zipfile.ZipFile(path, "w") as o:
        for info in z.infolist():
            o.writestr(info, pk if info.filename.endswith("data.pkl") else z.read(info))


def _codes(path: Path) -> dict[str, int]:
    out = {cmd: runner.invoke(app, [cmd, str(path)]).exit_code for cmd in ("scan", "inspect")}
    out["cast"] = runner.invoke(app, ["cast", str(path), "--dtype", "half", "-o", str(path) + ".out.pt"]).exit_code
    return out


@pytest.mark.parametrize("how", sorted(BUILT))
def test_stack_global_with_computed_operands_is_dangerous(tmp_path: Path, how: str) -> None:
    canary = tmp_path / "canary"
    body = _computed_global(BUILT[how], "os", "system", "touch " + shlex.quote(str(canary)))
    bare, zipped = tmp_path / "bare.pt", tmp_path / "zipped.pt"
    bare.write_bytes(body)
    _in_torch_zip(body, zipped)
    for p in (bare, zipped):
        r = scan(str(p))
        assert r.verdict is Verdict.DANGEROUS and r.exit_code == 3, (p.name, r.to_dict())
        assert _codes(p) == {"scan": 3, "inspect": 3, "cast": 3}, p.name
        assert not Path(str(p) + ".out.pt").exists()
    assert not canary.exists()  # statecli ran nothing
    pickle.loads(body)  # the ordinary loader picks os.system and runs it
    assert canary.exists()


@pytest.mark.parametrize("how", ["min", "str", "format"])
def test_computed_global_is_dangerous_whatever_it_names(tmp_path: Path, how: str) -> None:
    """Chosen at load time: even a name that would be safe as a constant is a finding."""
    p = tmp_path / "od.pt"
    p.write_bytes(b"\x80\x04" + BUILT[how]("collections") + BUILT[how]("OrderedDict") + b"\x93)R.")
    r = scan(str(p))
    assert r.verdict is Verdict.DANGEROUS and r.exit_code == 3, r.to_dict()
    assert runner.invoke(app, ["inspect", str(p)]).exit_code == 3


def test_constant_operands_through_the_memo_are_not_computed(tmp_path: Path) -> None:
    """Protocol 4 memoizes each string and reuses it with a memo GET: still constants (control)."""
    import collections

    data = pickle.dumps({"a": collections.OrderedDict(x=1), "b": collections.Counter("y")}, protocol=4)
    assert data.count(b"\x93") == 2 and data.count(b"collections") == 1  # the second module name: a memo GET
    p = tmp_path / "p4.pt"
    p.write_bytes(data)
    r = scan(str(p))
    assert not any(g.verdict is Verdict.DANGEROUS for g in r.globals), r.to_dict()


# -- class 3: file access and nested loaders -------------------------------------------------------

FILE_ACCESS = [
    ("pathlib", "Path.touch"), ("pathlib", "PosixPath.write_text"), ("pathlib", "Path.write_text"),
    ("pathlib", "Path.write_bytes"), ("pathlib", "Path.read_bytes"), ("pathlib", "Path.mkdir"),
    ("pathlib", "Path.unlink"), ("pathlib", "Path.rename"), ("pathlib", "Path.open"), ("pathlib", "os"),
    ("pathlib._local", "Path.touch"), ("pathlib", "_local"),
    ("torch.distributed.checkpoint.format_utils", "torch_save_to_dcp"),
    ("torch.distributed.checkpoint.format_utils", "dcp_to_torch_save"),
    ("torch.distributed.checkpoint.filesystem", "FileSystemReader"),
    ("torch.distributed.checkpoint.filesystem", "FileSystemWriter"),
    ("torch.distributed.checkpoint.state_dict_loader", "load"),
    ("torch.distributed.checkpoint", "save"),
    ("tempfile", "mkstemp"), ("tempfile", "NamedTemporaryFile"),
    ("logging", "FileHandler"), ("logging.handlers", "RotatingFileHandler"), ("logging", "basicConfig"),
    ("numpy", "save"), ("numpy", "load"), ("numpy", "fromfile"), ("numpy", "memmap"), ("numpy", "savez"),
    ("numpy", "ndarray.tofile"), ("numpy", "lib.format.open_memmap"),
    ("torch", "save"), ("torch", "load"), ("torch", "from_file"), ("torch", "UntypedStorage.from_file"),
    ("torch.storage", "UntypedStorage.from_file"), ("pandas", "read_pickle"), ("pandas", "read_csv"),
    ("pandas", "DataFrame.to_pickle"), ("pandas.core.frame", "DataFrame.to_csv"),
]
DATA = [("pathlib", "Path"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"),
        ("pathlib", "WindowsPath"), ("pathlib", "PurePath"), ("pathlib._local", "PosixPath")]


@pytest.mark.parametrize(("module", "name"), FILE_ACCESS)
def test_file_access_and_nested_loaders_are_dangerous(module: str, name: str) -> None:
    assert verdict(module, name) is Verdict.DANGEROUS
    assert verdict(module, name, DCP_TRUSTED) is Verdict.DANGEROUS  # a DCP `.metadata` trusts no more


@pytest.mark.parametrize(("module", "name"), DATA)
def test_path_constructors_are_data(module: str, name: str) -> None:
    assert verdict(module, name) is not Verdict.DANGEROUS
    assert verdict(module, name, DCP_TRUSTED) is not Verdict.DANGEROUS


def test_dcp_metadata_classes_stay_trusted() -> None:
    for full in DCP_TRUSTED:
        module, _, name = full.rpartition(".")
        assert verdict(module, name, DCP_TRUSTED) is Verdict.SAFE, full


def _stack_global_call(module: str, name: str, *args: bytes) -> bytes:
    return b"\x80\x04" + V(module) + V(name) + b"\x93(" + b"".join(args) + b"tR"


def test_dotted_pathlib_methods_in_a_bare_pickle(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path_obj = _stack_global_call("pathlib", "PosixPath", V(str(canary)))[2:]
    for dotted, extra in (("Path.touch", b""), ("PosixPath.write_text", V("x"))):
        body = _stack_global_call("pathlib", dotted, path_obj, extra) + b"."
        p = tmp_path / f"{dotted}.pt"
        p.write_bytes(body)
        r = scan(str(p))
        assert r.verdict is Verdict.DANGEROUS and r.exit_code == 3, r.to_dict()
        assert _codes(p) == {"scan": 3, "inspect": 3, "cast": 3}
        assert not canary.exists()
        pickle.loads(body)  # the ordinary loader writes the file
        assert canary.exists()
        canary.unlink()


class _WriteText:
    """torch.save'd as a reduce to pathlib.Path.write_text(Path(target), "x")."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.write_text, (pathlib.Path(self.target), "x"))


def test_reduce_to_path_write_text_in_a_torch_save(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    p = tmp_path / "wt.pt"
    torch.save({"w": torch.ones(2), "x": _WriteText(canary)}, p)
    r = scan(str(p))
    assert r.verdict is Verdict.DANGEROUS and r.exit_code == 3, r.to_dict()
    assert _codes(p) == {"scan": 3, "inspect": 3, "cast": 3}
    assert not canary.exists()
    torch.load(p, weights_only=False)
    assert canary.read_text() == "x"


@pytest.mark.filterwarnings("ignore")
def test_dcp_metadata_prefixed_with_pathlib_file_writes(tmp_path: Path) -> None:
    """The reviewer's DCP case: `.metadata` opened by a protocol-4 STACK_GLOBAL('pathlib', 'Path.touch')
    call; torch's DCP reader (pickle.load) creates the file, statecli refuses the folder."""
    import shutil

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    base = tmp_path / "base"
    dcp.save({"w": torch.ones(3)}, checkpoint_id=str(base))
    canary = tmp_path / "canary"
    new = b"cpathlib\nPosixPath\n(" + V(str(canary)) + b"tR"
    for dotted, extra in (("Path.touch", b""), ("PosixPath.write_text", V("x"))):
        d = tmp_path / dotted
        shutil.copytree(base, d)
        md = (d / ".metadata").read_bytes()
        prefix = b"\x8c\x07pathlib\x8c" + bytes([len(dotted)]) + dotted.encode() + b"\x93(" + new + extra + b"tR0"
        (d / ".metadata").write_bytes(md[:2] + prefix + md[2:])
        assert runner.invoke(app, ["scan", str(d)]).exit_code == 3
        assert runner.invoke(app, ["inspect", str(d)]).exit_code == 3
        assert not canary.exists()
        dcp_to_torch_save(str(d), str(tmp_path / f"{dotted}.out"))  # the ordinary loader
        assert canary.exists()
        canary.unlink()
