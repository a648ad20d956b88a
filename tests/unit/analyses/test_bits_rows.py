"""Bits per weight have one row type (qtensor.BitsRow) for quantized checkpoints (analyses/quantized)
and GGUF (analyses/gguf_view), and each keeps its JSON shape: quantized rows count "numel" with bits
rounded to 4 decimals, GGUF rows count "params" with bits unrounded and a block's "types"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from statecli.analyses.gguf_view import gguf_view
from statecli.analyses.quantized import quant_summary
from statecli.load import load_checkpoint
from statecli.qtensor import BitsRow, bits_per_weight
from tests.gguf_files import write_gguf
from tests.unit.formats import quant_builders as qb


def test_quantized_and_gguf_rows_are_one_type_with_their_json_shapes(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    t, _ = qb.gptq("model.layers.0.mlp.up", 64, 96, 32, rng)
    t["model.norm.weight"] = torch.ones(96, dtype=torch.float16)
    qb.save(tmp_path / "q" / "model.safetensors", t, {"quant_method": "gptq", "bits": 4, "group_size": 32})
    q = quant_summary(load_checkpoint(str(tmp_path / "q" / "model.safetensors")).entries)
    path = write_gguf(tmp_path / "m.gguf", {"blk.0.attn_q.weight": (rng.standard_normal((8, 256)).astype(np.float32), "Q4_K"),
                                            "output.weight": (rng.standard_normal((4, 64)).astype(np.float32), "Q8_0")}, {})
    g = gguf_view(load_checkpoint(str(path)))
    assert q is not None and g is not None
    rows = [q.quantized, q.model, *q.by_scheme, *q.by_module, g.total, *g.by_type, *g.by_block]
    assert all(type(r) is BitsRow for r in rows)

    quant = q.to_dict()["parameters"]
    assert set(quant) == {"tensors", "numel", "nbytes", "bits_per_weight"}
    assert quant["bits_per_weight"] == round(quant["nbytes"] * 8 / quant["numel"], 4) != quant["nbytes"] * 8 / quant["numel"]
    gj = g.to_dict()
    assert set(gj["total"]) == {"tensors", "params", "nbytes", "bits_per_weight"}
    assert gj["total"]["bits_per_weight"] == bits_per_weight(gj["total"]["nbytes"], gj["total"]["params"])
    assert set(gj["by_block"]["blk.0"]) == {"tensors", "params", "nbytes", "bits_per_weight", "types"}
    assert gj["by_block"]["blk.0"]["types"] == ["Q4_K"]
