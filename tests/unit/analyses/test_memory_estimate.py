"""size --memory: loaded weights as stored and dequantized, and the KV cache of standard / grouped-
query attention from config.json (2 x layers x kv_heads x head_dim x tokens x batch x bytes), with the
configs it does not cover (sliding window, latent attention) saying so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from statecli.analyses.memory import memory_estimate
from statecli.errors import UsageError
from statecli.load import load_checkpoint
from tests.unit.formats import quant_builders as qb

pytest.importorskip("torch")


def _ck(tmp_path: Path, config: dict[str, object] | None) -> object:
    t, _ = qb.gptq("model.layers.0.mlp.up", 64, 128, 32, np.random.default_rng(0))
    path = qb.save(tmp_path / "model.safetensors", t)
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return load_checkpoint(str(path))


GQA = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 4096,
       "torch_dtype": "bfloat16"}


def test_weights_as_stored_and_dequantized(tmp_path: Path) -> None:
    m = memory_estimate(_ck(tmp_path, None))
    stored = (128 // 8) * 64 * 4 + (128 // 32) * (64 // 8) * 4 + (128 // 32) * 64 * 2 + 128 * 4  # parts' bytes
    assert m.stored == stored and m.dequantized == 64 * 128 * 2  # float16 scales: float16 values
    assert m.kv_cache is None


def test_gqa_kv_cache_from_the_config(tmp_path: Path) -> None:
    m = memory_estimate(_ck(tmp_path, GQA), context=8192, batch=4)
    assert m.kv_cache == 2 * 32 * 8 * (4096 // 32) * 8192 * 4 * 2 and not m.not_covered
    assert "8 kv heads" in m.kv_formula and "bfloat16" in m.kv_formula
    m8 = memory_estimate(_ck(tmp_path, GQA), context=100, kv_dtype="float8_e4m3fn")
    assert m8.kv_cache == 2 * 32 * 8 * 128 * 100 * 1
    with pytest.raises(UsageError):
        memory_estimate(_ck(tmp_path, GQA), context=100, kv_dtype="notatype")


@pytest.mark.parametrize("extra,word", [({"sliding_window": 4096}, "sliding-window"),
                                        ({"kv_lora_rank": 512}, "latent attention")])
def test_configs_the_estimate_does_not_cover_say_so(tmp_path: Path, extra: dict[str, int], word: str) -> None:
    m = memory_estimate(_ck(tmp_path, GQA | extra), context=1024)
    assert any(word in w for w in m.not_covered)
    assert any(word in line for line in m.lines())
