"""diff of a GGUF against the transformers model it was converted from, with llama.cpp's q/k rope
permutation undone as transformers' own GGUF loading undoes it (its LlamaTensorProcessor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from statecli.cli import app
from tests.gguf_hf import llama_to_gguf, tiny_llama

pytest.importorskip("gguf")
pytest.importorskip("transformers")
pytest.importorskip("torch")


def _diff(gguf_file: Path, ref: Path) -> tuple[int, dict, str]:
    r = CliRunner().invoke(app, ["diff", str(gguf_file), str(ref), "--format", "json"])
    return r.exit_code, json.loads(r.stdout), r.stderr


@pytest.mark.parametrize("qtype", ["F32", "F16"])
def test_plain_gguf_equals_its_safetensors_once_the_rope_permutation_is_undone(tmp_path: Path, qtype: str) -> None:
    model = tiny_llama(tmp_path / "hf")
    g = llama_to_gguf(model, tmp_path / "m.gguf", qtype)
    code, d, err = _diff(g, tmp_path / "hf" / "model.safetensors")
    assert "LlamaTensorProcessor" in err  # the note says the layout was undone, and by what
    assert d["summary"]["removed"] == 0 and d["summary"]["added"] == 0
    errs = d["quantization_error"]["tensors"]
    assert {"blk.0.attn_q.weight", "blk.1.attn_k.weight"} <= set(errs)
    if qtype == "F32":
        assert code == 0, d  # every value equal, q and k included
    else:  # F16 of float32 weights: equal within half precision
        assert all(e["nmse"] < 1e-6 for e in errs.values()), errs


def test_q8_0_gguf_against_its_safetensors_has_a_small_nmse_on_q_and_k(tmp_path: Path) -> None:
    model = tiny_llama(tmp_path / "hf")
    g = llama_to_gguf(model, tmp_path / "m.gguf", "Q8_0")
    _, d, _ = _diff(tmp_path / "hf" / "model.safetensors", g)
    errs = d["quantization_error"]["tensors"]
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.attn_q.weight", "blk.1.attn_k.weight"):
        assert errs[name]["nmse"] < 1e-3, (name, errs[name])  # permuted rows would give ~2


def test_without_transformers_names_only_and_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_llama(tmp_path / "hf")
    g = llama_to_gguf(model, tmp_path / "m.gguf", "F32")
    import statecli.formats.gguf.hf as hf

    monkeypatch.setattr(hf, "transformers_here", lambda: False)
    code, d, err = _diff(g, tmp_path / "hf" / "model.safetensors")
    assert code == 1 and "NOT undone" in err and "not installed" in err
    errs = d["quantization_error"]["tensors"]
    assert errs["blk.0.attn_q.weight"]["nmse"] > 0.1 and errs["blk.0.ffn_up.weight"]["nmse"] == 0


def test_only_the_tensors_transformers_changes_are_read_whole(tmp_path: Path) -> None:
    from statecli.formats.gguf.hfview import hf_view

    g = llama_to_gguf(tiny_llama(tmp_path / "hf"), tmp_path / "m.gguf", "Q8_0")
    view = hf_view(str(g))
    assert view is not None
    whole = {s for t in view.tensors if t.built for s in t.sources}
    assert whole == {f"blk.{i}.attn_{w}.weight" for i in (0, 1) for w in "qk"}  # the rest: range by range
    assert all(t.info.storage_key == t.sources[0] for t in view.tensors if not t.built)  # the stored tensor itself


def test_the_name_map_is_built_once_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers' get_gguf_hf_weights_map asks gguf-py for the whole model's TensorNameMap at every
    submodule it recurses into (51 s for an 80-layer llama's 723 tensors): statecli has it built once."""
    import gguf

    from statecli.formats.gguf.hf import hf_model

    model = tiny_llama(tmp_path / "hf")
    g = llama_to_gguf(model, tmp_path / "m.gguf", "F32")
    built = []
    build = gguf.get_tensor_name_map
    monkeypatch.setattr(gguf, "get_tensor_name_map", lambda *a: built.append(a) or build(*a))
    counting = gguf.get_tensor_name_map
    hf = hf_model(str(g))
    assert hf is not None and len(hf.names) == len(model.state_dict())
    assert len(built) == 1, built
    assert gguf.get_tensor_name_map is counting  # gguf-py's own function is back in place
