"""Tiny transformers models of the architectures whose GGUFs transformers' TensorProcessors undo, and their
GGUF as llama.cpp's convert_hf_to_gguf.py writes it (https://github.com/ggml-org/llama.cpp, the
modify_tensors of each model class, cited at each step): names by gguf-py's TensorNameMap, the
`{arch}.*` hyperparameters transformers reads (its GGUF_CONFIG_MAPPING), then the converter's change:
  qwen2_moe  Qwen2MoeModel: gate_up_proj [E, 2F, H] split into ffn_gate_exps / ffn_up_exps (down as is);
             the shared expert's gate stored 1-D
  gpt2       GPT2Model: c_attn/c_proj/c_fc weights transposed (Conv1D's [in, out]); output.weight = wte
  bloom      BloomModel: query_key_value's rows from per-head (q, k, v) to q rows, k rows, v rows
  gemma2     Gemma2Model: every norm.weight + 1
  nemotron   NemotronModel: every norm.weight + 1 (layernorm1p)
  mamba      MambaModel: A_log -> -exp(A_log); conv1d.weight [D, 1, K] squeezed to [D, K]
  minimax_m2 MiniMaxM2Model: experts as Qwen2-MoE's; e_score_correction_bias as exp_probs_b.bias"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SMALL: dict[str, dict[str, Any]] = {
    # expert widths other than the defaults (1408, 5632), which transformers' GGUF config mapping leaves as they
    # are: statecli fills them from the metadata llama.cpp writes (EXTRA_KEYS)
    "qwen2_moe": dict(hidden_size=32, intermediate_size=64, num_experts=4, num_experts_per_tok=2, num_attention_heads=2,
                      num_key_value_heads=1, moe_intermediate_size=48, shared_expert_intermediate_size=80),
    "gpt2": dict(n_embd=64, n_head=4),  # n_positions: transformers maps context_length to n_ctx, so the default
    "bloom": dict(hidden_size=64, n_head=4),
    "gemma2": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "nemotron": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2),
    "mamba": dict(hidden_size=64, state_size=16, expand=2, conv_kernel=4, time_step_rank=4),
    "minimax_m2": dict(hidden_size=64, intermediate_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                       num_local_experts=4, num_experts_per_tok=2, rotary_dim=16),
}
# `{arch}.*` keys llama.cpp's converter writes beyond those transformers maps (Qwen2MoeModel.set_gguf_parameters:
# add_expert_feed_forward_length, add_expert_shared_feed_forward_length): key -> config attribute
EXTRA_KEYS = {"qwen2_moe": {"expert_feed_forward_length": "moe_intermediate_size",
                            "expert_shared_feed_forward_length": "shared_expert_intermediate_size"}}
# llama.cpp's architecture name where it differs from transformers' model_type
GGUF_ARCH = {"qwen2_moe": "qwen2moe", "minimax_m2": "minimax-m2"}
PROCESSOR = {"qwen2_moe": "Qwen2MoeTensorProcessor", "gpt2": "GPT2TensorProcessor", "bloom": "BloomTensorProcessor",
             "gemma2": "Gemma2TensorProcessor", "nemotron": "NemotronTensorProcessor", "mamba": "MambaTensorProcessor",
             "minimax_m2": "MiniMaxM2TensorProcessor"}


def tiny(folder: Path, model_type: str) -> Any:
    """A 2-layer causal LM of `model_type` (vocab 64), random weights (norms away from their init),
    saved as safetensors in `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    layers = {"gpt2": "n_layer", "bloom": "n_layer"}.get(model_type, "num_hidden_layers")
    cfg = AutoConfig.for_model(model_type, vocab_size=64, **{layers: 2}, **SMALL[model_type])
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder)
    return model


def _transposed(name: str, t: np.ndarray, cfg: Any) -> list[tuple[str, np.ndarray]]:
    # GPT2Model.modify_tensors: Conv1D weights transposed
    if name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
        t = t.T
    return [(name, t)]


def _qkv_split(name: str, t: np.ndarray, cfg: Any) -> list[tuple[str, np.ndarray]]:
    # BloomModel.modify_tensors: (n_head, 3, head_dim, ...) -> q rows, k rows, v rows
    if "query_key_value" in name:
        n_head, n_embed = cfg.n_head, cfg.hidden_size
        qkv = t.reshape(n_head, 3, n_embed // n_head, *t.shape[1:])
        t = np.concatenate([qkv[:, i].reshape(n_embed, *t.shape[1:]) for i in range(3)], axis=0)
    return [(name, t)]


def _norm_plus_one(name: str, t: np.ndarray, cfg: Any) -> list[tuple[str, np.ndarray]]:
    # Gemma2Model / NemotronModel.modify_tensors: norm weights stored with their +1
    return [(name, t + 1 if name.endswith("norm.weight") else t)]


def _ssm(name: str, t: np.ndarray, cfg: Any) -> list[tuple[str, np.ndarray]]:
    # MambaModel.modify_tensors: A = -exp(A_log); the conv's singleton dim squeezed
    if name.endswith(".A_log"):
        return [(name, -np.exp(t))]
    if name.endswith("conv1d.weight"):
        return [(name, t.squeeze(1))]
    return [(name, t)]


def _experts(name: str, t: np.ndarray, cfg: Any) -> list[tuple[str, np.ndarray]]:
    # Qwen2MoeModel.modify_tensors: gate_up_proj split on dim -2 into gate and up; shared gate 1-D
    if name.endswith("mlp.experts.gate_up_proj"):
        f = t.shape[-2] // 2
        base = name.removesuffix(".gate_up_proj")
        return [(f"{base}.gate_proj.weight", t[..., :f, :]), (f"{base}.up_proj.weight", t[..., f:, :])]
    if name.endswith("mlp.experts.down_proj"):
        return [(f"{name}.weight", t)]
    if name.endswith("shared_expert_gate.weight"):
        return [(name, t.reshape(-1))]
    if name.endswith(".e_score_correction_bias"):  # MiniMaxM2Model: the router's bias, exp_probs_b.bias
        return [(name.removesuffix("_bias") + ".bias", t)]
    return [(name, t)]


MODIFY: dict[str, Callable[[str, np.ndarray, Any], list[tuple[str, np.ndarray]]]] = {
    "qwen2_moe": _experts, "gpt2": _transposed, "bloom": _qkv_split, "gemma2": _norm_plus_one,
    "nemotron": _norm_plus_one, "mamba": _ssm, "minimax_m2": _experts}


def to_gguf(model: Any, path: Path, qtype: str = "F32") -> Path:
    """`model` as llama.cpp's converter writes it: its change (MODIFY), then 2-D+ tensors whose rows are
    whole Q8_0 blocks as `qtype`, the rest F32; a tied lm_head left out (GPT-2's output written as wte)."""
    import gguf
    from gguf import GGMLQuantizationType as T
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    from tests.gguf_files import quantized

    c = model.config
    arch = GGUF_ARCH.get(c.model_type, c.model_type)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_file_type(0 if qtype == "F32" else 7)
    _hyperparameters(w, arch, c, {**GGUF_CONFIG_MAPPING[c.model_type], **EXTRA_KEYS.get(c.model_type, {})})
    w.add_token_list([f"t{i}" for i in range(c.vocab_size)])  # the vocabulary transformers counts where no vocab_size
    tmap = gguf.get_tensor_name_map(_arch_enum(arch), 2)
    tied = getattr(c, "tie_word_embeddings", False)
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        if c.model_type == "bloom":  # BloomModel.modify_tensors: names without "transformer."
            hf_name = hf_name.removeprefix("transformer.")
        for name, data in MODIFY[c.model_type](hf_name, t.detach().float().numpy(), c):
            base, dot, suffix = name.rpartition(".")
            new = tmap.get_name(name, try_suffixes=(".weight", ".bias")) or (tmap.get_name(base) or "") + dot + suffix
            assert new and not new.startswith("."), name
            _add(w, new, np.ascontiguousarray(data, np.float32), qtype, quantized, T)
            if c.model_type == "gpt2" and new == "token_embd.weight":
                _add(w, "output.weight", np.ascontiguousarray(data, np.float32), qtype, quantized, T)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add(w: Any, name: str, data: np.ndarray, qtype: str, quantized: Any, T: Any) -> None:
    if data.ndim < 2 or qtype == "F32" or data.shape[-1] % 32:
        w.add_tensor(name, data)
    else:
        w.add_tensor(name, quantized(data, qtype), raw_dtype=T[qtype])


def _arch_enum(arch: str) -> Any:
    import gguf

    return next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)


def _hyperparameters(w: Any, arch: str, c: Any, mapping: dict[str, Any]) -> None:
    """The `{arch}.*` keys transformers maps to config attributes (and the converter's EXTRA_KEYS), from the
    config (rope_theta from rope_parameters in transformers 5)."""
    for key, attr in mapping.items():
        if attr is None:
            continue
        v = getattr(c, attr, None)
        if v is None and attr == "rope_theta" and getattr(c, "rope_parameters", None):
            v = c.rope_parameters.get("rope_theta")
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            w.add_uint32(f"{arch}.{key}", v)
        elif isinstance(v, float):
            w.add_float32(f"{arch}.{key}", v)
