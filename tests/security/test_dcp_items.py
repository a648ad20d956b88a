"""DCP folders are read by statecli itself (issue 19): `.metadata` trusts DCP's dataclasses by exact name
only, every item in the `.distcp` files is read and judged as the file torch.load would read, a tensor
saved in pieces by two ranks is assembled from them, and torch's DCP loader is never imported to read.
Payloads are canaries that create a file; each is run under the ordinary loader only to prove it fires."""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app

runner = CliRunner()
COMMANDS = ("cast", "convert", "show", "diff", "strip", "move")

_SAVE = textwrap.dedent('''
    import os, sys
    import torch, torch.distributed as dist, torch.multiprocessing as mp
    import torch.distributed.checkpoint as dcp

    def worker(rank, out, port):
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
        dist.init_process_group("gloo", rank=rank, world_size=2)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor
        mesh = init_device_mesh("cpu", (2,))
        w = torch.arange(48, dtype=torch.float32).reshape(6, 8) / 7
        v = torch.arange(10, dtype=torch.float64) - 3.5
        sd = {"model": {"w": distribute_tensor(w, mesh, [Shard(0)]), "v": distribute_tensor(v, mesh, [Shard(0)]),
                        "b": torch.ones(3, dtype=torch.bfloat16)},
              "optimizer": {"param_groups": [{"lr": 0.1, "params": [0]}]}, "epoch": 5}
        dcp.save(sd, checkpoint_id=out)
        dist.destroy_process_group()

    if __name__ == "__main__":
        # fork: the ranks inherit the imported torch (spawn re-imported it in each, doubling the CPU cost)
        mp.start_processes(worker, args=(sys.argv[1], int(sys.argv[2])), nprocs=2, start_method="fork")
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_rank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-rank save (gloo on 127.0.0.1, CPU): DTensors sharded across the ranks."""
    root = tmp_path_factory.mktemp("dcp2")
    (root / "save.py").write_text(_SAVE)
    out = root / "ck"
    subprocess.run([sys.executable, str(root / "save.py"), str(out), str(_free_port())], check=True,
                   capture_output=True, timeout=300)
    return out


def _metadata(folder: Path) -> object:
    with open(folder / ".metadata", "rb") as f:
        return pickle.load(f)  # a benign folder this test made, read to build the hostile variants


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _torch_reassembled(folder: Path) -> dict[str, torch.Tensor]:
    """torch's own reassembly of the benign folder (the ordinary loader, in the test only)."""
    import torch.distributed.checkpoint as dcp

    md = _metadata(folder)
    target = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype)  # type: ignore[attr-defined]
              for k, v in md.state_dict_metadata.items() if hasattr(v, "size")}  # type: ignore[attr-defined]
    dcp.load(target, checkpoint_id=str(folder), no_dist=True)  # type: ignore[call-arg]
    return target


def test_two_rank_pieces_are_assembled(two_rank: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    md = _metadata(two_rank)
    assert len(md.state_dict_metadata["model.w"].chunks) == 2  # type: ignore[attr-defined]  # split across ranks
    want = _torch_reassembled(two_rank)
    out = tmp_path / "out.safetensors"
    res = runner.invoke(app, ["convert", str(two_rank), "-o", str(out)])
    assert res.exit_code == 0, res.output
    got = load_file(str(out))  # the model container: names without "model."
    for name in ("w", "v", "b"):
        assert torch.equal(got[name], want[f"model.{name}"]), name
    stats = json.loads(runner.invoke(app, ["inspect", str(two_rank), "--stats", "--format", "json"]).output)
    w = want["model.w"].double()
    row = next(r for r in stats["entries"] if r["name"] == "w")
    assert row["stats"]["min"] == pytest.approx(float(w.min())) and row["stats"]["max"] == pytest.approx(float(w.max()))
    assert row["stats"]["mean"] == pytest.approx(float(w.mean()))
    ref = tmp_path / "ref.pt"
    torch.save({"model": {k.split(".", 1)[1]: v for k, v in want.items() if k.startswith("model.")}}, ref)
    diff = runner.invoke(app, ["diff", str(two_rank), str(ref), "--format", "json"])
    assert diff.exit_code == 0, diff.output  # equal values, every element
    other = {k: v.clone() for k, v in want.items()}
    other["model.w"][5, 7] += 1  # in the second rank's piece
    torch.save({"model": {k.split(".", 1)[1]: v for k, v in other.items() if k.startswith("model.")}}, ref)
    assert runner.invoke(app, ["diff", str(two_rank), str(ref)]).exit_code == 1
    shown = runner.invoke(app, ["show", str(two_rank), "v", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    v = json.loads(shown.output)["entry"]["stats"]
    assert (v["min"], v["max"], v["mean"]) == (-3.5, 5.5, 1.0)  # the first rank's half, the second's, both


def test_reading_never_imports_torch_dcp(two_rank: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f'''
        import sys
        from statecli.cli import main
        sys.argv = ["statecli", "cast", {str(two_rank)!r}, "--dtype", "half", "-o", {str(tmp_path / "h.safetensors")!r}]
        try:
            main()
        except SystemExit as e:
            assert not e.code, e.code
        print("dcp imported:", "torch.distributed.checkpoint" in sys.modules)
    ''')
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "dcp imported: False" in res.stdout, res.stdout + res.stderr
    assert (tmp_path / "h.safetensors").exists()


# -- hostile folders --------------------------------------------------------------------------------

def _canary_cmd(canary: Path) -> str:
    return f"touch {canary}"


class _Canary:
    """Pickles as os.system(touch canary): torch.load(weights_only=False) runs it."""

    def __init__(self, canary: Path) -> None:
        self.cmd = _canary_cmd(canary)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.cmd,)


def _payload_prefix(how: str, canary: Path) -> bytes:
    """Protocol-0 opcodes computing a call before the real Metadata (then POP): as issue 19 built them."""
    cmd = _canary_cmd(canary).encode()
    if how == "pathlib.os":
        return b"cpathlib\nattrgetter\n(Vsystem\ntR(cpathlib\nos\ntR(V" + cmd + b"\ntR0"
    if how == "genericpath.os":
        return b"cpathlib\nattrgetter\n(Vsystem\ntR(cgenericpath\nos\ntR(V" + cmd + b"\ntR0"
    assert how == "torch_save_to_dcp"
    return (b"ctorch.distributed.checkpoint.format_utils\ntorch_save_to_dcp\n(Vevil.pt\nVconverted\ntR0")


def _hostile_metadata(src: Path, dst: Path, how: str, canary: Path) -> Path:
    folder = _copy(src, dst)
    body = pickle.dumps(_metadata(folder), protocol=2)
    (folder / ".metadata").write_bytes(body[:2] + _payload_prefix(how, canary) + body[2:])
    torch.save(_Canary(canary), folder / "evil.pt")  # what torch_save_to_dcp would torch.load
    return folder


def _hostile_blob(src: Path, dst: Path, how: str, canary: Path) -> Path:
    """The `epoch` item replaced by a torch.save blob holding a payload: padded past 64 KiB, or legacy."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    folder = _copy(src, dst)
    buf = io.BytesIO()
    if how == "big":
        torch.save({"epoch": _Canary(canary), "pad": b"x" * 100_000}, buf)
    else:
        torch.save(_Canary(canary), buf, _use_new_zipfile_serialization=False)
    blob = buf.getvalue()
    (folder / "__9_0.distcp").write_bytes(blob)
    md = _metadata(folder)
    for idx in list(md.storage_data):  # type: ignore[attr-defined]
        if idx.fqn == "epoch":
            md.storage_data[idx] = _StorageInfo("__9_0.distcp", 0, len(blob))  # type: ignore[attr-defined]
    (folder / ".metadata").write_bytes(pickle.dumps(md))
    return folder


def _fires(code: str, cwd: Path, canary: Path) -> None:
    """Prove the payload runs under the ordinary loader (in a child process), then remove its trace."""
    subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, timeout=300)
    assert canary.exists(), "the canary never fired under the ordinary loader"
    canary.unlink()


def _all_commands(folder: Path, tmp_path: Path, canary: Path) -> dict[str, int]:
    """Every value command on the folder (run with the folder as working directory, where a relative
    path in a payload points), the canary checked after each."""
    ref = tmp_path / "ref.pt"
    torch.save({"x": torch.zeros(1)}, ref)
    args = {"cast": ["--dtype", "half", "-o", str(tmp_path / "c.pt")], "convert": ["-o", str(tmp_path / "c.safetensors")],
            "show": ["w"], "diff": [str(ref)], "strip": ["--optimizer", "-o", str(tmp_path / "s.pt")],
            "move": ["--device", "cpu", "-o", str(tmp_path / "m.pt")]}
    codes = {}
    old = os.getcwd()
    os.chdir(folder)
    try:
        for cmd in ("scan", "inspect", *COMMANDS):
            res = runner.invoke(app, [cmd, str(folder), *args.get(cmd, [])])
            assert not canary.exists(), f"{cmd} ran the payload"
            assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.output
            codes[cmd] = res.exit_code
    finally:
        os.chdir(old)
    return codes


@pytest.mark.parametrize("how", ["pathlib.os", "genericpath.os", "torch_save_to_dcp"])
def test_metadata_payload_before_the_real_metadata(two_rank: Path, tmp_path: Path, how: str) -> None:
    canary = tmp_path / "canary"
    folder = _hostile_metadata(two_rank, tmp_path / "ck", how, canary)
    _fires(f"import pickle; pickle.load(open({str(folder / '.metadata')!r}, 'rb'))", folder, canary)
    codes = _all_commands(folder, tmp_path, canary)  # none of them ran it
    assert codes["scan"] in (1, 3)
    scan = json.loads(runner.invoke(app, ["scan", str(folder), "--format", "json"]).output)
    names = {g["name"]: g["verdict"] for f in scan["files"] for g in f["globals"]}
    caller = "torch.distributed.checkpoint.format_utils.torch_save_to_dcp" if how == "torch_save_to_dcp" \
        else "pathlib.attrgetter"
    assert names[caller] != "safe"
    out = runner.invoke(app, ["inspect", str(folder)]).output
    assert caller in out  # inspect names what loading would need to trust, never "nothing unsafe"


@pytest.mark.parametrize("how", ["big", "legacy"])
def test_payload_in_a_distcp_blob(two_rank: Path, tmp_path: Path, how: str) -> None:
    canary = tmp_path / "canary"
    folder = _hostile_blob(two_rank, tmp_path / "ck", how, canary)
    _fires(f"import torch; torch.load({str(folder / '__9_0.distcp')!r}, weights_only=False)", folder, canary)
    codes = _all_commands(folder, tmp_path, canary)
    assert codes["scan"] == 3 and codes["inspect"] == 3
    for cmd in COMMANDS:
        assert codes[cmd] == 3, (cmd, codes)
    assert not any((tmp_path / n).exists() for n in ("c.pt", "c.safetensors", "s.pt", "m.pt"))


def test_needs_trust_blob_counts_for_every_command(two_rank: Path, tmp_path: Path) -> None:
    """A bytes item holding a user class (no payload): scan exit 1, inspect names it; values still read."""
    import argparse

    from torch.distributed.checkpoint.filesystem import _StorageInfo

    folder = _copy(two_rank, tmp_path / "ck")
    buf = io.BytesIO()
    torch.save(argparse.Namespace(lr=0.1), buf)
    (folder / "__9_0.distcp").write_bytes(buf.getvalue())
    md = _metadata(folder)
    idx = next(i for i in md.storage_data if i.fqn == "epoch")  # type: ignore[attr-defined]
    md.storage_data[idx] = _StorageInfo("__9_0.distcp", 0, len(buf.getvalue()))  # type: ignore[attr-defined]
    (folder / ".metadata").write_bytes(pickle.dumps(md))
    scan = runner.invoke(app, ["scan", str(folder)])
    assert scan.exit_code == 1 and "argparse.Namespace" in scan.output
    res = runner.invoke(app, ["inspect", str(folder)])
    assert res.exit_code == 0 and "argparse.Namespace" in res.output


def test_item_outside_the_folder_and_transforms_are_refused(two_rank: Path, tmp_path: Path) -> None:
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    folder = _copy(two_rank, tmp_path / "ck")
    md = _metadata(folder)
    idx = next(i for i in md.storage_data if i.fqn == "model.b")  # type: ignore[attr-defined]
    info = md.storage_data[idx]  # type: ignore[attr-defined]
    md.storage_data[idx] = _StorageInfo(info.relative_path, info.offset, info.length, ["stream.zstd/1"])  # type: ignore[attr-defined]
    (folder / ".metadata").write_bytes(pickle.dumps(md))
    res = runner.invoke(app, ["inspect", str(folder)])
    assert res.exit_code == 2 and "stream.zstd/1" in res.output
    md.storage_data[idx] = _StorageInfo("../x.distcp", 0, 10)  # type: ignore[attr-defined]
    (folder / ".metadata").write_bytes(pickle.dumps(md))
    assert runner.invoke(app, ["scan", str(folder)]).exit_code == 2


def test_per_rank_metadata_only_is_refused_with_one_line(two_rank: Path, tmp_path: Path) -> None:
    folder = _copy(two_rank, tmp_path / "ck")
    (folder / ".metadata").rename(folder / "__0.metadata")
    res = runner.invoke(app, ["inspect", str(folder)])
    assert res.exit_code == 2 and "__0.metadata" in res.output and "Traceback" not in res.output


def test_records_naming_the_same_bytes_are_read_once(two_rank: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of `.metadata` records pointing at one item (a memo reference each) cost one read."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

    import statecli.formats as formats

    folder = _copy(two_rank, tmp_path / "ck")
    md = _metadata(folder)
    epoch = next(i for i in md.storage_data if i.fqn == "epoch")  # type: ignore[attr-defined]
    for n in range(3000):
        md.state_dict_metadata[f"e{n}"] = BytesStorageMetadata()  # type: ignore[attr-defined]
        md.storage_data[MetadataIndex(f"e{n}")] = md.storage_data[epoch]  # type: ignore[attr-defined]
    (folder / ".metadata").write_bytes(pickle.dumps(md))
    reads: list[str] = []
    real_read, real_scan = formats.read_raw, formats.scan_file
    monkeypatch.setattr(formats, "read_raw", lambda p, **k: reads.append(p) or real_read(p, **k))
    monkeypatch.setattr(formats, "scan_file", lambda p, *a, **k: reads.append(p) or real_scan(p, *a, **k))
    assert runner.invoke(app, ["inspect", str(folder)]).exit_code == 0
    items = len({(i.relative_path, i.offset) for i in md.storage_data.values()})  # type: ignore[attr-defined]
    item_reads = [p for p in reads if p.startswith(str(folder) + os.sep + "__")]  # not the folder itself
    assert len(item_reads) == items  # each distinct item once
    reads.clear()
    assert runner.invoke(app, ["scan", str(folder)]).exit_code == 0
    assert len(reads) == items
