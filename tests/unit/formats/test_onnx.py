"""ONNX initializers read by statecli's own wire-format reader, against onnx.numpy_helper.to_array;
external data checked against the model's folder; hostile protobuf in one line, exit 2/3."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from statecli.cli import app
from statecli.io.values import value_reader
from statecli.load import load_checkpoint
from statecli.state import Format, Kind

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

runner = CliRunner()


def _export(path: Path) -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 6 * 6, 5)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False)


def _parity(path: Path) -> None:
    model = onnx.load(str(path))
    want = {i.name: numpy_helper.to_array(i, base_dir=str(path.parent)) for i in model.graph.initializer}
    ck = load_checkpoint(str(path))
    assert ck.format is Format.ONNX
    got = {e.name: e for e in ck.entries}
    assert list(got) == list(want)
    with value_reader(ck) as reader:
        for name, arr in want.items():
            t = got[name].tensor
            assert t is not None and got[name].kind is Kind.INITIALIZER
            assert (t.dtype, t.shape) == (str(arr.dtype), arr.shape)
            np.testing.assert_array_equal(reader.array(t), arr)


def test_initializers_match_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _export(path)
    _parity(path)
    code = "import sys; from statecli.load import load_checkpoint; load_checkpoint(sys.argv[1]); " \
           "assert 'torch' not in sys.modules and 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


def test_external_data_matches_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _export(path)
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="w.bin", size_threshold=0)
    _parity(path)


def _model_with_external(folder: Path, location: str, offset: int, length: int, numel: int) -> Path:
    t = onnx.TensorProto()
    t.name, t.data_type = "w", onnx.TensorProto.FLOAT
    t.dims.extend([numel])
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    node = helper.make_node("Identity", ["w"], ["y"])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [numel])],
                              initializer=[t])
    path = folder / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def test_two_gb_external_data_inspects_from_the_header(tmp_path: Path) -> None:
    data = tmp_path / "big.bin"
    with open(data, "wb") as f:
        f.truncate(1 << 31)  # sparse: no block of it is ever written
    path = _model_with_external(tmp_path, "big.bin", 0, 1 << 31, 1 << 29)
    real_open, real_os_open = open, os.open

    def refuse(file: object, *args: object, **kwargs: object) -> object:
        assert os.path.basename(str(file)) != "big.bin", "metadata read the external data file"
        return (real_os_open if isinstance(file, str) and args and isinstance(args[0], int) else real_open)(
            file, *args, **kwargs)  # type: ignore[operator]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("builtins.open", refuse)
        mp.setattr(os, "open", refuse)
        ck = load_checkpoint(str(path))
    assert [e.tensor.shape for e in ck.entries if e.tensor] == [(1 << 29,)]
    r = runner.invoke(app, ["inspect", str(path), "-f", "json"])
    assert r.exit_code == 0, r.output
    assert '"numel": 536870912' in r.output


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin", "link.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 16)
    os.symlink(tmp_path / "outside.bin", folder / "link.bin")
    path = _model_with_external(folder, location, 0, 16, 4)
    for cmd in ("inspect", "scan"):
        r = runner.invoke(app, [cmd, str(path)])
        assert r.exit_code == 3, r.output
        assert "Traceback" not in r.output and "outside" in r.output


def test_external_range_past_the_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\0" * 8)
    path = _model_with_external(tmp_path, "w.bin", 4, 16, 4)
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 3 and "range" in r.output


def test_custom_domain_needs_trust(tmp_path: Path) -> None:
    node = helper.make_node("MyOp", ["x"], ["y"], domain="com.example.ops")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.ops", 1)])
    path = tmp_path / "c.onnx"
    path.write_bytes(model.SerializeToString())
    r = runner.invoke(app, ["scan", str(path)])
    assert r.exit_code == 1 and "com.example.ops" in r.output
    plain = tmp_path / "p.onnx"
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", graph.input, graph.output)
    plain.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                              helper.make_opsetid("com.microsoft", 1)]).SerializeToString())
    r = runner.invoke(app, ["scan", str(plain)])
    assert r.exit_code == 0 and "ai.onnx (opset 17)" in r.output and "com.microsoft" in r.output


@pytest.mark.parametrize("body", [
    b"\x08\x07\x3a" + b"\xff" * 11,              # varint overflow in a length
    b"\x08\x07\x3a\x80\x80\x80\x80\x08",         # a 2 GiB graph in a few bytes: past the file
    b"\x08\x07\x3a\x05\x2a\x03\x42\x01",         # an initializer cut short inside the graph
    b"\x08\x07\x3a\x05\x2a\x03\x08\xff\xff",      # a dimension varint running off its message
    b"\x08\x07\x3a\x02\x0b\x00",                 # wire type 3 (groups)
])
def test_hostile_protobuf_is_one_line_exit_2(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "h.onnx"
    path.write_bytes(body)
    for cmd in ("inspect", "scan"):
        r = runner.invoke(app, [cmd, str(path)])
        assert r.exit_code == 2, (cmd, r.output)
        assert "Traceback" not in r.output and "h.onnx" in r.output


def test_huge_dimension_is_refused(tmp_path: Path) -> None:
    t = onnx.TensorProto()
    t.name, t.data_type = "w", onnx.TensorProto.FLOAT
    t.dims.extend([1 << 40, 1 << 40])
    graph = helper.make_graph([], "g", [], [], initializer=[t])
    path = tmp_path / "d.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 2 and "Traceback" not in r.output


def _diff_json(a: Path, b: Path) -> tuple[int, dict[str, dict[str, object]]]:
    import json

    r = runner.invoke(app, ["diff", str(a), str(b), "-f", "json"])
    return r.exit_code, {k["name"]: k for k in json.loads(r.output)["keys"]}


def test_diff_pairs_renamed_and_transposed_initializers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 6, bias=False), torch.nn.ReLU(), torch.nn.Linear(6, 3)).eval()
    pt, path = tmp_path / "m.pt", tmp_path / "m.onnx"
    torch.save(m.state_dict(), pt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.randn(2, 5, 4),), str(path), dynamo=False)  # 3-D input: MatMul of W^T
    names = [i.name for i in onnx.load(str(path)).graph.initializer]
    assert any(n.startswith("onnx::MatMul") for n in names)  # the exporter renamed and transposed
    code, keys = _diff_json(path, pt)
    assert code == 0, keys
    assert set(keys) == set(m.state_dict())
    assert "transposed" in str(keys["0.weight"]["note"]) and keys["0.weight"]["status"] == "equal"


def test_diff_reports_batchnorm_folded_by_the_exporter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 6 * 6, 5)).eval()
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
        m[1].weight.uniform_(0.5, 2)
    pt, path = tmp_path / "m.pt", tmp_path / "m.onnx"
    torch.save(m.state_dict(), pt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False)
    code, keys = _diff_json(pt, path)
    assert code == 1
    assert {n for n, k in keys.items() if k["status"] == "folded by the exporter"} == {
        "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert keys["3.weight"]["status"] == "equal" and keys["3.weight"]["note"] == "matched exact name"
    assert "by shape" in str(keys["0.weight"]["note"]) and keys["0.weight"]["status"] == "changed"
    assert not any(k["status"] in ("removed", "added") for k in keys.values())


def test_local_function_domain_is_no_native_code(tmp_path: Path) -> None:
    """A call into the model's own function (onnxscript exports use them) runs ONNX nodes, not a library;
    the function's own nodes are judged like the graph's."""
    body = helper.make_node("Relu", ["a"], ["b"])
    fn = helper.make_function("my.funcs", "F", ["a"], ["b"], [body], [helper.make_opsetid("", 17)])
    call = helper.make_node("F", ["x"], ["y"], domain="my.funcs")
    graph = helper.make_graph([call], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, functions=[fn], opset_imports=[helper.make_opsetid("", 17),
                                                                    helper.make_opsetid("my.funcs", 1)])
    path = tmp_path / "f.onnx"
    path.write_bytes(model.SerializeToString())
    r = runner.invoke(app, ["scan", str(path)])
    assert r.exit_code == 0 and "local function domain: my.funcs" in r.output, r.output
    bad = helper.make_function("my.funcs", "F", ["a"], ["b"], [helper.make_node("Op", ["a"], ["b"], domain="x.native")],
                               [helper.make_opsetid("x.native", 1)])
    path.write_bytes(helper.make_model(graph, functions=[bad], opset_imports=model.opset_import).SerializeToString())
    r = runner.invoke(app, ["scan", str(path)])
    assert r.exit_code == 1 and "x.native" in r.output


@pytest.mark.parametrize("cmd", [["size"], ["show", "3.bias"], ["check", "--no-nan"], ["inspect", "--stats"]])
def test_read_commands_on_an_onnx_model(tmp_path: Path, cmd: list[str]) -> None:
    path = tmp_path / "m.onnx"
    _export(path)
    r = runner.invoke(app, [cmd[0], str(path), *cmd[1:]])
    assert r.exit_code == 0, r.output
    want = numpy_helper.to_array(next(i for i in onnx.load(str(path)).graph.initializer if i.name == "3.bias"))
    if cmd[0] == "show":
        assert f"{float(want.max()):.4g}"[:5] in r.output


_TYPED = [("f", onnx.TensorProto.FLOAT, [0.5, -1.25, 3.0, 2.0, 1e-3, 7.0]),
          ("d", onnx.TensorProto.DOUBLE, [0.5, -1.25, 3.0, 2.0, 1e-300, 7.0]),
          ("h", onnx.TensorProto.FLOAT16, np.array([0.5, -1.25, 3.0, 2.0, 1e-3, 7.0], np.float16)),
          ("bf", onnx.TensorProto.BFLOAT16, [1.5, -2.0, 0.0, 3.25, 1e10, -1e-3]),
          ("i8", onnx.TensorProto.INT8, [-128, 127, 0, -1, 5, 3]),
          ("u8", onnx.TensorProto.UINT8, [0, 255, 7, 8, 9, 1]),
          ("i16", onnx.TensorProto.INT16, [-32768, 32767, 0, -1, 5, 3]),
          ("i32", onnx.TensorProto.INT32, [-2**31, 2**31 - 1, 0, -1, 5, 3]),
          ("i64", onnx.TensorProto.INT64, [-2**63, 2**63 - 1, 0, -1, 5, 3]),
          ("u32", onnx.TensorProto.UINT32, [0, 2**32 - 1, 1, 2, 3, 4]),
          ("u64", onnx.TensorProto.UINT64, [0, 2**64 - 1, 1, 2, 3, 4]),
          ("b", onnx.TensorProto.BOOL, [True, False, True, True, False, False]),
          ("c64", onnx.TensorProto.COMPLEX64, [1 + 2j, 3 - 4j, 0, 1j, 2, 3])]


def _typed_model(path: Path, inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph([], "g", [], [], initializer=inits)
    model = helper.make_model(graph)
    path.write_bytes(model.SerializeToString())
    return model


def test_typed_field_initializers_match_onnx(tmp_path: Path) -> None:
    """float_data/double_data in place, int32_data (float16, bfloat16, int8..bool), int64_data and
    uint64_data decoded from their packed varints: values equal to onnx's, read through the format's reader."""
    from statecli.formats.registry import values_of

    path = tmp_path / "typed.onnx"
    model = _typed_model(path, [helper.make_tensor(n, t, [2, 3], v, raw=False) for n, t, v in _TYPED])
    ck = load_checkpoint(str(path))
    want = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    with values_of(ck) as reader:
        for e in ck.entries:
            assert e.tensor is not None and reader.reads_numpy(e.tensor), e.name
            got = reader.array(e.tensor)
            assert got.dtype == want[e.name].dtype
            np.testing.assert_array_equal(got.view(np.uint8), want[e.name].view(np.uint8), err_msg=e.name)
            np.testing.assert_array_equal(reader.read_flat(e.tensor, 2, 5).view(np.uint8),
                                          want[e.name].reshape(-1)[2:5].view(np.uint8))
    r = runner.invoke(app, ["show", str(path), "i64"])
    assert r.exit_code == 0 and "9223372036854775807" in r.output.replace(",", "").replace(" ", ""), r.output
    r = runner.invoke(app, ["inspect", str(path), "--stats", "-f", "json"])
    assert r.exit_code == 0 and "not summarised" not in r.output and "does not read" not in r.output, r.output


@pytest.mark.parametrize("vals,cmd", [
    ([1, 2, 3], "inspect"),                 # 3 one-byte varints where the shape needs 6: refused with the metadata
    ([1, 2, 3, 4, 5, 6, 7], "show"),        # 7 varints for 6 values: found when the values are decoded
])
def test_packed_varints_of_the_wrong_count_are_one_line(tmp_path: Path, vals: list[int], cmd: str) -> None:
    t = helper.make_tensor("w", onnx.TensorProto.INT64, [6], [0] * 6, raw=False)
    del t.int64_data[:]
    t.int64_data.extend(vals)
    path = tmp_path / "v.onnx"
    _typed_model(path, [t])
    r = runner.invoke(app, [cmd, str(path), *(["w"] if cmd == "show" else [])])
    assert r.exit_code == 2 and "Traceback" not in r.output and "v.onnx" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "varints" in r.output


def _sparse_model(path: Path, indices: np.ndarray, location: str | None = None) -> onnx.ModelProto:
    values = numpy_helper.from_array(np.array([1.5, -2.0, 3.0], np.float32), "sp")
    if location is not None:
        for key, value in (("location", location), ("offset", "0"), ("length", "12")):
            e = values.external_data.add()
            e.key, e.value = key, value
        values.data_location = onnx.TensorProto.EXTERNAL
        values.ClearField("raw_data")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(indices, "sp_idx"), [5, 4])
    graph = helper.make_graph([], "g", [], [], initializer=[numpy_helper.from_array(np.ones(2, np.float32), "dense")],
                              sparse_initializer=[sparse])
    model = helper.make_model(graph)
    path.write_bytes(model.SerializeToString())
    return model


@pytest.mark.parametrize("indices", [np.array([[0, 1], [2, 3], [4, 0]], np.int64), np.array([1, 11, 16], np.int64)])
def test_sparse_initializers_are_listed(tmp_path: Path, indices: np.ndarray) -> None:
    path = tmp_path / "s.onnx"
    model = _sparse_model(path, indices)
    ck = load_checkpoint(str(path))
    got = {e.name: e for e in ck.entries}
    for sp in model.graph.sparse_initializer:
        values, idx = numpy_helper.to_array(sp.values), numpy_helper.to_array(sp.indices)
        t = got[sp.values.name].tensor
        assert t is not None and got[sp.values.name].kind is Kind.INITIALIZER
        assert (t.dtype, t.shape, t.layout) == (str(values.dtype), tuple(sp.dims), "sparse_coo")
        assert t.nbytes == values.nbytes + idx.nbytes
        assert f"values {list(values.shape)}, indices {list(idx.shape)}" in ck.metadata["sparse initializers"]
    r = runner.invoke(app, ["inspect", str(path), "--stats"])
    assert r.exit_code == 0 and "sparse_coo" in r.output, r.output


def test_hostile_sparse_initializers(tmp_path: Path) -> None:
    path = tmp_path / "s.onnx"
    _sparse_model(path, np.array([[0, 1], [2, 3]], np.int64))  # 2 indices for 3 values
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 2 and "sparse initializer 'sp'" in r.output and "Traceback" not in r.output, r.output
    _sparse_model(path, np.array([0, 1, 2], np.int64), location="../outside.bin")
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 3 and "outside the model's folder" in r.output, r.output
