"""An ONNX model behind a URL: the protobuf walk reads its headers by range requests and skips the
weight bytes (never requested); values are read by ranges too, equal to onnx's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from statecli.cli import app
from statecli.io import source

from .server import RangeServer

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

runner = CliRunner()


def _big_model(path: Path) -> onnx.ModelProto:
    """8 initializers of 2 MiB raw_data each (16 MiB) and one int64_data initializer (packed varints)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((512, 1024)).astype(np.float32), f"layer{i}.weight")
             for i in range(8)]
    inits.append(helper.make_tensor("steps", onnx.TensorProto.INT64, [3], [-5, 1 << 40, 7], raw=False))
    model = helper.make_model(helper.make_graph([], "g", [], [], initializer=inits))
    path.write_bytes(model.SerializeToString())
    return model


def test_remote_onnx_reads_headers_by_ranges(http: RangeServer, http_root: Path) -> None:
    model = _big_model(http_root / "big.onnx")
    size = (http_root / "big.onnx").stat().st_size
    r = runner.invoke(app, ["inspect", http.url("big.onnx"), "--format", "json"])
    assert r.exit_code == 0, r.output
    names = [e["name"] for e in json.loads(r.output)["entries"]]
    assert names == [i.name for i in model.graph.initializer]
    # one 64 KiB block around each initializer's header (and the file's size asked once): the weights' 16 MiB
    # are skipped, never sent
    assert http.log.bytes_sent < size // 8, (http.log.bytes_sent, size)
    assert len(http.log.requests) <= 2 * len(names) + 2, http.log.requests
    assert source.STATS.requests == len(http.log.requests)
    want = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name in ("layer3.weight", "steps"):
        http.log.reset()
        r = runner.invoke(app, ["show", http.url("big.onnx"), name, "--format", "json"])
        assert r.exit_code == 0, r.output
        stats = json.loads(r.output)["entry"]["stats"]
        assert stats["max"] == pytest.approx(float(want[name].max()))
        assert stats["min"] == pytest.approx(float(want[name].min()))


@pytest.mark.parametrize("location,code", [("w.bin", 2), ("../w.bin", 3)])
def test_remote_external_data_is_named_not_read(http: RangeServer, http_root: Path, location: str, code: int) -> None:
    t = helper.make_tensor("w", onnx.TensorProto.FLOAT, [4], [0.0] * 4)
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = key, value
    (http_root / "ext.onnx").write_bytes(helper.make_model(helper.make_graph([], "g", [], [], [t])).SerializeToString())
    (http_root / "w.bin").write_bytes(bytes(16))
    r = runner.invoke(app, ["inspect", http.url("ext.onnx")])
    assert r.exit_code == code and len(r.output.strip().splitlines()) == 1, r.output
    assert ("remote model is not read" in r.output) is (code == 2)
    assert not any("w.bin" in q for q in map(str, http.log.requests))
