"""torch.export .pt2 archives against torch.export.load: the same weights, constants, kinds and values;
hostile archives refused in one line, never handed to a loader."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app
from statecli.io.values import torch_to_numpy, value_reader
from statecli.load import load_checkpoint
from statecli.state import Format, Kind

runner = CliRunner()


class Net(torch.nn.Module):
    """BatchNorm, a non-persistent buffer, tied weights, a tensor attribute and a literal (lifted constants)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.lin = torch.nn.Linear(4, 10, bias=False)
        self.lin.weight = self.emb.weight
        self.bn = torch.nn.BatchNorm1d(4)
        self.register_buffer("mask", torch.rand(4), persistent=False)
        self.register_buffer("scale", torch.full((4,), 2.0))
        self.c = torch.arange(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.emb(x).mean(1)) * self.mask * self.scale + self.c
        return self.lin(h) + torch.tensor([1.0])


def _export(path: Path) -> Any:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(Net().eval(), (torch.randint(0, 10, (2, 3)),))
    torch.export.save(ep, str(path))
    return ep


@pytest.fixture(scope="module")
def pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "m.pt2"
    _export(path)
    return path


def _oracle(path: Path) -> Any:
    # torch.export.load's fallback warning formats the pickle error's text as a %-format string, which
    # fails inside a capturing log handler when that text holds a '%': its logging is off here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            return torch.export.load(str(path))
        finally:
            logging.disable(logging.NOTSET)


def test_entries_kinds_and_values_match_torch_export_load(pt2: Path) -> None:
    ep = _oracle(pt2)
    ck = load_checkpoint(str(pt2))
    assert ck.format is Format.PT2 and ck.container == "state_dict"
    model = {e.name: e for e in ck.entries if e.group == ""}
    consts = {e.name.removeprefix("constants."): e for e in ck.entries if e.group == "constants"}
    assert list(model) == list(ep.state_dict) and set(consts) == set(ep.constants)
    sig = ep.graph_signature
    want = {**{n: Kind.PARAMETER for n in sig.parameters}, **{n: Kind.BUFFER for n in sig.buffers},
            **{n: Kind.BUFFER_NP for n in sig.non_persistent_buffers},
            **{n: Kind.CONSTANT for n in sig.lifted_tensor_constants}}
    got = {n: e.kind for n, e in {**model, **consts}.items()}
    assert got == want
    assert all(str(e.evidence).startswith("export signature") for e in [*model.values(), *consts.values()])
    # tied weights share one record, counted once
    assert model["emb.weight"].tensor.storage_id == model["lin.weight"].tensor.storage_id  # type: ignore[union-attr]
    with value_reader(ck) as reader:
        for name, t in [*ep.state_dict.items(), *ep.constants.items()]:
            e = model.get(name) or consts[name]
            assert e.tensor is not None
            assert (e.tensor.dtype, e.tensor.shape) == (str(t.dtype).removeprefix("torch."), tuple(t.shape))
            np.testing.assert_array_equal(reader.array(e.tensor), torch_to_numpy(t))


def test_containers_read_like_a_training_checkpoints(pt2: Path) -> None:
    """ep.constants is the program's constants (lifted constants, non-persistent buffers), not "other state";
    the line of other containers counts only what they hold (no "0 values")."""
    ck = load_checkpoint(str(pt2))
    assert {c.name: str(c.role) for c in ck.containers} == {"state_dict": "model state",
                                                            "constants": "program constants"}
    out = runner.invoke(app, ["inspect", str(pt2)], env={"COLUMNS": "200"}).stdout
    line = next(x for x in out.splitlines() if x.startswith("other containers:"))
    assert line.startswith("other containers: constants (program constants, ") and "0 value" not in line, line


def test_metadata_imports_no_torch(pt2: Path) -> None:
    code = ("import sys; from statecli.load import load_checkpoint; ck = load_checkpoint(sys.argv[1]); "
            "assert 'torch' not in sys.modules; print(len(ck.entries))")
    out = subprocess.run([sys.executable, "-c", code, str(pt2)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "11"


def test_diff_against_state_dict_and_convert_writes_ep_state_dict(pt2: Path, tmp_path: Path) -> None:
    ep = _oracle(pt2)
    ckpt = tmp_path / "ck.pt"
    torch.save({k: v.detach().clone() for k, v in ep.state_dict.items()}, ckpt)
    r = runner.invoke(app, ["diff", str(pt2), str(ckpt)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "s.safetensors"
    r = runner.invoke(app, ["convert", str(pt2), "-o", str(out), "--duplicate-tied"])
    assert r.exit_code == 0, r.output
    from safetensors.torch import load_file

    written = load_file(str(out))
    assert set(written) == set(ep.state_dict)  # no constants, no non-persistent buffer
    for k, v in ep.state_dict.items():
        assert torch.equal(written[k], v.detach())
    r = runner.invoke(app, ["convert", str(pt2), "--key", "constants", "-o", str(tmp_path / "c.safetensors")])
    assert r.exit_code == 0, r.output
    assert set(load_file(str(tmp_path / "c.safetensors"))) == set(ep.constants)
    r = runner.invoke(app, ["convert", str(pt2), "-o", str(tmp_path / "s.pt")])
    assert r.exit_code == 0, r.output
    flat = torch.load(tmp_path / "s.pt", weights_only=True)  # loadable with load_state_dict as it is
    assert set(flat) == set(ep.state_dict) and all(torch.equal(flat[k], v.detach()) for k, v in ep.state_dict.items())


def test_several_programs_listed_and_key_chooses(tmp_path: Path) -> None:
    from torch.export.pt2_archive._package import package_pt2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = torch.export.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),))
        b = torch.export.export(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).eval(),
                                (torch.randn(2, 2),))
    path = tmp_path / "two.pt2"
    package_pt2(str(path), exported_programs={"enc": a, "dec": b})
    ck = load_checkpoint(str(path), key="enc.state_dict")
    assert [e.name for e in ck.entries if e.group == ""] == list(a.state_dict)
    assert {e.group for e in ck.entries if e.group} == {"dec.state_dict"}
    dec = [e for e in ck.entries if e.group == "dec.state_dict"]
    assert {e.name.removeprefix("dec.state_dict."): e.kind for e in dec} == {
        **{n: Kind.PARAMETER for n in b.graph_signature.parameters}, **{n: Kind.BUFFER for n in b.graph_signature.buffers}}


# -- hostile archives ------------------------------------------------------------------------------

def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    edit(members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dst


def _config(members: dict[str, bytes], name: str) -> dict[str, Any]:
    return json.loads(members[name])  # type: ignore[no-any-return]


class Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def test_payload_in_sample_inputs_fires_under_torch_and_is_refused(pt2: Path, tmp_path: Path) -> None:
    canary = tmp_path / "fired"
    buf = io.BytesIO()
    torch.save(((Canary(str(canary)),), {}), buf)
    bad = _rewrite(pt2, tmp_path / "bad.pt2", lambda m: m.__setitem__("m/data/sample_inputs/model.pt", buf.getvalue()))
    for cmd in (["inspect", str(bad)], ["scan", str(bad)], ["convert", str(bad), "-o", str(tmp_path / "o.safetensors")]):
        r = runner.invoke(app, cmd)
        assert r.exit_code == 3, (cmd, r.output)
    assert not canary.exists() and not (tmp_path / "o.safetensors").exists()
    assert "io.open" in runner.invoke(app, ["scan", str(bad)]).output
    _oracle(bad)
    assert canary.exists()  # torch.export.load falls back to weights_only=False: the payload ran


def test_unreferenced_member_and_aoti_library(pt2: Path, tmp_path: Path) -> None:
    extra = _rewrite(pt2, tmp_path / "x.pt2", lambda m: m.__setitem__("m/data/weights/weight_99", b"\x80\x02N."))
    r = runner.invoke(app, ["scan", str(extra)])
    assert r.exit_code == 3 and "weight_99" in r.output and "never read" in r.output
    aoti = _rewrite(pt2, tmp_path / "a.pt2", lambda m: m.__setitem__("m/data/aotinductor/model/m.so", b"\x7fELF"))
    r = runner.invoke(app, ["scan", str(aoti), "-f", "json"])
    assert r.exit_code == 1, r.output
    assert json.loads(r.output)["files"][0]["verdict"] == "needs-trust"


def _edit_weight(field: str, value: Any) -> Callable[[dict[str, bytes]], None]:
    def edit(m: dict[str, bytes]) -> None:
        name = "m/data/weights/model_weights_config.json"
        cfg = _config(m, name)
        entry = cfg["config"]["bn.weight"]
        if field == "path_name":
            entry["path_name"] = value
        else:
            entry["tensor_meta"][field] = value
        m[name] = json.dumps(cfg).encode()
    return edit


@pytest.mark.parametrize(("field", "value", "code"), [
    ("sizes", [{"as_int": 1000}], 2),                     # view past its record
    ("sizes", [{"as_int": 1 << 70}], 2),                  # an absurd size
    ("sizes", [{"as_expr": {"expr_str": "s0"}}], 2),      # symbolic
    ("strides", [{"as_int": 1}, {"as_int": 1}], 2),       # rank mismatch
    ("storage_offset", {"as_int": -1}, 2),
    ("dtype", 999, 2),
    ("path_name", "../../etc/passwd", 2),
    ("path_name", "weight_77", 3),  # no such record, and weight_1 is left unread: a place to hide a payload
])
def test_malformed_configs_are_one_line(pt2: Path, tmp_path: Path, field: str, value: Any, code: int) -> None:
    bad = _rewrite(pt2, tmp_path / "bad.pt2", _edit_weight(field, value))
    r = runner.invoke(app, ["inspect", str(bad)])
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and "bad.pt2" in r.output


def test_malformed_json_and_pickled_opaque_object(pt2: Path, tmp_path: Path) -> None:
    bad = _rewrite(pt2, tmp_path / "j.pt2", lambda m: m.__setitem__("m/models/model.json", b"{" * 100000))
    r = runner.invoke(app, ["inspect", str(bad)])
    assert r.exit_code == 2 and "Traceback" not in r.output

    def opaque(m: dict[str, bytes]) -> None:
        name = "m/data/constants/model_constants_config.json"
        cfg = _config(m, name)
        cfg["config"]["obj"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                "tensor_meta": None}
        m[name] = json.dumps(cfg).encode()
        m["m/data/constants/opaque_obj_0"] = b"cos\nsystem\n(S'true'\ntR."

    bad = _rewrite(pt2, tmp_path / "o.pt2", opaque)
    r = runner.invoke(app, ["scan", str(bad)])
    assert r.exit_code == 3 and "os.system" in r.output
    assert runner.invoke(app, ["inspect", str(bad)]).exit_code == 3


def test_a_zip_that_is_no_pt2_still_reads_as_torch_save(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert load_checkpoint(str(path)).format is Format.TORCH_ZIP
    os.remove(path)


def test_custom_object_listed_and_refused_by_rewrites(pt2: Path, tmp_path: Path) -> None:
    def opaque(m: dict[str, bytes]) -> None:
        name = "m/data/constants/model_constants_config.json"
        cfg = _config(m, name)
        cfg["config"]["obj"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                "tensor_meta": None}
        m[name] = json.dumps(cfg).encode()
        m["m/data/constants/opaque_obj_0"] = b"\x80\x02K\x07."  # pickle.dumps(7): nothing to run

    path = _rewrite(pt2, tmp_path / "obj.pt2", opaque)
    ck = load_checkpoint(str(path))
    (obj,) = [e for e in ck.entries if e.name == "constants.obj"]
    assert obj.tensor is None and "opaque_obj_0" in str(obj.value)
    r = runner.invoke(app, ["convert", str(path), "-o", str(tmp_path / "o.pt")])
    assert r.exit_code == 2 and "constants.obj" in r.output and not (tmp_path / "o.pt").exists()
    r = runner.invoke(app, ["convert", str(path), "-o", str(tmp_path / "o.pt"), "--drop-unsupported"])
    assert r.exit_code == 0, r.output
    # A .pt output is the flat state dict of the chosen program, as torch.export.load's ep.state_dict.
    model = {e.name for e in ck.entries if e.group == "" and e.tensor is not None}
    assert set(torch.load(tmp_path / "o.pt", weights_only=True)) == model


def test_pickled_weight_values_read_without_unpickling(pt2: Path, tmp_path: Path) -> None:
    """use_pickle records (torch.save of the tensor) are read by the no-execution reader, values in place."""
    ep = _oracle(pt2)
    buf = io.BytesIO()
    torch.save(ep.state_dict["bn.running_var"].detach() + 3, buf)

    def pickled(m: dict[str, bytes]) -> None:
        name = "m/data/weights/model_weights_config.json"
        cfg = _config(m, name)
        record = cfg["config"]["bn.running_var"]["path_name"]
        cfg["config"]["bn.running_var"]["use_pickle"] = True
        m[name] = json.dumps(cfg).encode()
        m[f"m/data/weights/{record}"] = buf.getvalue()

    path = _rewrite(pt2, tmp_path / "p.pt2", pickled)
    want = _oracle(path).state_dict["bn.running_var"]
    ck = load_checkpoint(str(path))
    (e,) = [e for e in ck.entries if e.name == "bn.running_var"]
    assert e.tensor is not None
    with value_reader(ck) as reader:
        np.testing.assert_array_equal(reader.array(e.tensor), torch_to_numpy(want))
    assert runner.invoke(app, ["scan", str(path)]).exit_code == 0


def test_aoti_package_weights_listed_and_library_needs_trust(tmp_path: Path) -> None:
    from torch.export.pt2_archive._package import package_pt2
    from torch.export.pt2_archive._package_weights import TensorProperties, Weights

    w = torch.arange(12.0).reshape(3, 4)
    b = w[1]  # a view of w's storage: AOTInductor saves the whole tensor once
    lib = tmp_path / "model.so"
    lib.write_bytes(b"\x7fELF")  # never loaded by statecli; what a real package's compiled model is
    path = tmp_path / "aoti.pt2"
    package_pt2(str(path), aoti_files={"model": [str(lib), Weights({"w": (w, TensorProperties(w)),
                                                                    "b": (b, TensorProperties(b))})]})
    ck = load_checkpoint(str(path))
    got = {e.name: e for e in ck.entries}
    assert ck.container == "aotinductor.model" and set(got) == {"w", "b"}
    with value_reader(ck) as reader:
        for name, t in (("w", w), ("b", b)):
            np.testing.assert_array_equal(reader.array(got[name].tensor), t.numpy())  # type: ignore[arg-type]
    assert any("AOTInductor" in m for m in ck.warnings)
    r = runner.invoke(app, ["scan", str(path)])
    assert r.exit_code == 1 and "native code" in r.output


def test_a_folder_walk_scans_pt2_files(pt2: Path, tmp_path: Path) -> None:
    canary = tmp_path / "fired"
    buf = io.BytesIO()
    torch.save(((Canary(str(canary)),), {}), buf)
    folder = tmp_path / "models"
    folder.mkdir()
    _rewrite(pt2, folder / "bad.pt2", lambda m: m.__setitem__("m/data/sample_inputs/model.pt", buf.getvalue()))
    r = runner.invoke(app, ["scan", str(tmp_path / "models")])
    assert r.exit_code == 3 and "bad.pt2" in r.output, r.output
    assert runner.invoke(app, ["inspect", str(folder)]).exit_code == 3  # the folder's one checkpoint


def _flip_member_byte(src: Path, dst: Path, member: str) -> Path:
    """`member`'s first byte changed in place, its CRC left as it was (a reader that ignores CRCs, as
    torch does, sees other bytes than the archive declares)."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(member)
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len  # the local header's extra (torch pads it)
    data[start] ^= 1
    dst.write_bytes(bytes(data))
    return dst


def test_crc_mismatches_are_findings_and_corrupt_weights_errors(pt2: Path, tmp_path: Path) -> None:
    bad = _flip_member_byte(pt2, tmp_path / "v.pt2", "m/archive_version")
    r = runner.invoke(app, ["scan", str(bad)])
    assert r.exit_code == 3 and "CRC" in r.output, r.output
    bad = _flip_member_byte(pt2, tmp_path / "w.pt2", "m/data/weights/weight_0")
    r = runner.invoke(app, ["scan", str(bad)])
    assert r.exit_code == 2 and "corrupt tensor data" in r.output, r.output
    assert runner.invoke(app, ["inspect", str(bad)]).exit_code == 0  # metadata never reads tensor bytes
