"""A tiny transformers model saved with save_pretrained and converted to GGUF the way llama.cpp's
convert_hf_to_gguf.py does it: names by gguf-py's TensorNameMap, the `{arch}.*` hyperparameters, and
for llama-family models the q/k rows permuted for rope (LlamaModel.permute / modify_tensors in
https://github.com/ggml-org/llama.cpp/blob/master/convert_hf_to_gguf.py: q with (n_head, n_head),
k with (n_head, n_head_kv))."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama(folder: Path, tie: bool = False, arch: str = "llama", head_dim: int | None = None) -> Any:
    """A LlamaForCausalLM (or Qwen2/Qwen3ForCausalLM: arch "qwen2"/"qwen3") with GQA (4 heads, 2 kv heads),
    saved as safetensors in `folder`; `head_dim` other than hidden / heads as Qwen3-0.6B's."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    torch.manual_seed(0)
    cfg = {"qwen2": Qwen2Config, "qwen3": Qwen3Config}.get(arch, LlamaConfig)(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=tie, rms_norm_eps=1e-5,
        **({"head_dim": head_dim} if head_dim else {}))
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # norms away from 1 so a lost norm shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder)
    return model


def llama_to_gguf(model: Any, path: Path, qtype: str = "F32") -> Path:
    """`model` as llama.cpp's converter writes it: 2-D weights as `qtype`, 1-D tensors F32; q/k permuted
    for llama (Qwen2Model does not permute)."""
    import gguf
    from gguf import GGMLQuantizationType as T

    from tests.gguf_files import quantized

    c = model.config
    arch = c.model_type
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    w.add_rope_dimension_count(head_dim)
    if getattr(c, "head_dim", None):  # TextModel.set_gguf_parameters: key/value length where the config has head_dim
        w.add_key_length(c.head_dim)
        w.add_value_length(c.head_dim)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]) if getattr(c, "rope_parameters", None) else 10000.0)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(0 if qtype == "F32" else 1 if qtype == "F16" else 7)
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], c.num_hidden_layers)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = t.detach().float().numpy()
        if arch != "llama":  # only LlamaModel (and its subclasses) permute
            pass
        elif name.endswith("q_proj.weight"):
            data = permute(data, c.num_attention_heads, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = permute(data, c.num_attention_heads, c.num_key_value_heads)
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new is not None, name
        if data.ndim == 1 or qtype == "F32":
            w.add_tensor(new, np.ascontiguousarray(data, np.float32))
        elif qtype == "F16":
            w.add_tensor(new, data.astype(np.float16))
        else:
            w.add_tensor(new, quantized(data, qtype), raw_dtype=T[qtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
