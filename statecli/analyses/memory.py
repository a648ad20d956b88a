"""`size --memory`: the memory a checkpoint's weights take once loaded, as stored (a quantized weight
stays packed) and dequantized to its compute dtype, and, with --context/--batch and a Hugging Face
config.json beside it, the KV cache of standard multi-head / grouped-query attention:
2 (K and V) x layers x kv_heads x head_dim x context x batch x bytes per value. Configs whose cache
is not that (a sliding window, multi-head latent attention) say the estimate does not cover them.
Every figure comes with its arithmetic, so a reader can check it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..io.limits import read_json_file
from ..io.urls import is_remote
from ..state import Checkpoint
from ..units import dtype_name, fmt_bytes, itemsize

__all__ = ["MemoryEstimate", "memory_estimate"]


@dataclass(frozen=True)
class MemoryEstimate:
    stored: int  # bytes of the model state's tensors as stored (quantized weights packed)
    dequantized: int  # the same with every quantized weight in its compute dtype
    kv_cache: int | None = None
    kv_formula: str = ""
    not_covered: tuple[str, ...] = ()  # why the KV estimate is missing or partial

    @property
    def total(self) -> int:
        return self.stored + (self.kv_cache or 0)

    def lines(self) -> list[str]:
        out = [f"weights as stored: {fmt_bytes(self.stored)}"]
        if self.dequantized != self.stored:
            out.append(f"weights dequantized to their compute dtype: {fmt_bytes(self.dequantized)}")
        if self.kv_cache is not None:
            out.append(f"KV cache: {self.kv_formula} = {fmt_bytes(self.kv_cache)}")
            out.append(f"weights as stored + KV cache: {fmt_bytes(self.total)}")
        out += [f"KV cache not estimated: {w}" for w in self.not_covered]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"weights_stored": self.stored, "weights_dequantized": self.dequantized, "kv_cache": self.kv_cache,
                "kv_formula": self.kv_formula or None, "total": self.total, "not_covered": list(self.not_covered)}


def memory_estimate(ck: Checkpoint, context: int | None = None, batch: int = 1,
                    kv_dtype: str | None = None) -> MemoryEstimate:
    """Weights (as stored, dequantized) and, with `context`, the KV cache from the config.json beside
    the checkpoint; UsageError for a --kv-dtype that is no dtype."""
    tensors = [e.tensor for e in ck.entries if e.tensor is not None and e.group == ""]
    stored = sum(t.nbytes for t in tensors)
    deq = sum(t.numel * itemsize(t.quant.compute_dtype) if t.quant is not None else t.nbytes for t in tensors)
    if context is None:
        return MemoryEstimate(stored, deq)
    kv_name = dtype_name(kv_dtype) if kv_dtype is not None else None
    if kv_dtype is not None and kv_name is None:
        raise UsageError(None, f"--kv-dtype {kv_dtype!r} is not a dtype", "e.g. bfloat16, float16, float8_e4m3fn")
    config = _config(ck.path)
    if config is None:
        return MemoryEstimate(stored, deq, not_covered=("no readable config.json beside the checkpoint",))
    kv, formula, why = _kv_cache(config, context, batch, kv_name)
    return MemoryEstimate(stored, deq, kv, formula, why)


def _config(path: str) -> dict[str, Any] | None:
    if is_remote(path):
        return None
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        config = read_json_file(os.path.join(folder, "config.json"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    text = config.get("text_config")  # multimodal configs keep the language model's settings here
    return text if isinstance(text, dict) and "num_hidden_layers" in text else config


def _kv_cache(c: dict[str, Any], context: int, batch: int,
              kv_dtype: str | None) -> tuple[int | None, str, tuple[str, ...]]:
    """(bytes, arithmetic, what is not covered) of the KV cache the config describes."""
    if c.get("kv_lora_rank") or c.get("q_lora_rank"):
        return None, "", ("multi-head latent attention (kv_lora_rank): its compressed cache is not this estimate",)
    layers, heads = _pos(c.get("num_hidden_layers")), _pos(c.get("num_attention_heads"))
    if layers is None or heads is None:
        return None, "", ("config.json names no num_hidden_layers / num_attention_heads",)
    kv_heads = _pos(c.get("num_key_value_heads")) or heads
    hidden = _pos(c.get("hidden_size"))
    head_dim = _pos(c.get("head_dim")) or (hidden // heads if hidden else None)
    if head_dim is None:
        return None, "", ("config.json gives neither head_dim nor hidden_size",)
    dtype = kv_dtype or dtype_name(str(c.get("dtype") or c.get("torch_dtype") or "")) or "float32"
    size = itemsize(dtype)
    kv = 2 * layers * kv_heads * head_dim * context * batch * size
    formula = (f"2 (K,V) x {layers} layers x {kv_heads} kv heads x {head_dim} head_dim x {context} tokens x "
               f"{batch} batch x {size} B ({dtype})")
    window = c.get("sliding_window")
    sliding = isinstance(window, int) and window > 0 and c.get("use_sliding_window", True) is not False
    types = c.get("layer_types")
    if sliding or isinstance(types, list) and any(isinstance(t, str) and "sliding" in t for t in types):
        return kv, formula, ("sliding-window attention: layers with a window hold fewer tokens than this "
                             "full-context figure (an upper bound)",)
    return kv, formula, ()


def _pos(v: Any) -> int | None:
    return v if type(v) is int and v > 0 else None
