"""A GGUF in Hugging Face's layout, the way transformers' own GGUF loading sees it: the config it builds
from the metadata (`load_gguf_checkpoint`) and its per-architecture TensorProcessor, which undoes what
llama.cpp's converter changed (the q/k rows permuted for rope in llama-family models, ...). transformers
is optional: without it (or for an architecture it does not load) there is no HF layout, only names."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from ...extras import quiet_libraries

# `{arch}.*` metadata keys llama.cpp's converter writes that transformers' GGUF_CONFIG_MAPPING does not read
# (its config keeps the class default: Qwen2-MoE's 1408-wide experts for any file), by model_type: the config
# field each one is (convert_hf_to_gguf.py's Qwen2MoeModel.set_gguf_parameters, Qwen3MoeModel inherits it;
# TextModel.set_gguf_parameters writes attention.key_length where the config has a head_dim: Qwen3-0.6B's 128
# with 1024 / 16 heads, which transformers would otherwise take from the class default or as hidden / heads;
# llama and mistral read it from rope.dimension_count)
_HEAD_DIM = {"attention.key_length": "head_dim"}
UNMAPPED: dict[str, dict[str, str]] = {
    "qwen2_moe": {"expert_feed_forward_length": "moe_intermediate_size",
                  "expert_shared_feed_forward_length": "shared_expert_intermediate_size"},
    "qwen3_moe": {"expert_feed_forward_length": "moe_intermediate_size"},
    "qwen3": _HEAD_DIM, "nemotron": _HEAD_DIM,
}


@dataclass(frozen=True)
class HfLayout:
    """transformers' view of one GGUF: its config (as load_gguf_checkpoint parses it) and the processor
    whose `process` turns dequantized GGUF tensors into HF tensors (hfview.py asks it)."""

    architecture: str
    config: dict[str, Any]
    processor: Any


def transformers_here() -> bool:
    return importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None


def hf_layout(path: str) -> HfLayout | None:
    """transformers' layout of the local GGUF at `path` (a part of a split model: its first part);
    None without transformers or for an architecture transformers does not load from GGUF."""
    if not transformers_here():
        return None
    st = os.stat(path)
    return _layout(path, st.st_mtime_ns, st.st_size)  # a file rewritten in place is parsed again


@cache
def _layout(path: str, mtime_ns: int, size: int) -> HfLayout | None:
    with quiet_libraries():  # their lines (no vocab_size..., torchao's) are not the command's output
        import transformers.modeling_gguf_pytorch_utils as tg

        try:
            parsed = tg.load_gguf_checkpoint(path, return_tensors=False)  # type: ignore[no-untyped-call]
        except (ValueError, NotImplementedError, KeyError):
            return None  # "GGUF model with architecture X is not supported yet"
    arch = _architecture(path)
    config = _filled(dict(parsed.get("config", {})), arch, _metadata(path))
    proc = tg.TENSOR_PROCESSORS.get(arch, tg.TensorProcessor)(config=config)  # type: ignore[no-untyped-call]
    return HfLayout(arch, config, proc)


@dataclass(frozen=True)
class HfModel:
    """What transformers' GGUF loading makes of a GGUF: its config (config.json's content, as
    `from_pretrained(..., gguf_file=...)` builds it) and the HF name of each GGUF tensor it loads."""

    config: dict[str, Any]
    names: dict[str, str]  # GGUF name -> HF name; a GGUF tensor transformers skips has none
    shapes: dict[str, tuple[int, ...]]  # HF name -> the model's shape for it
    layout: HfLayout
    module: Any = None  # the model on the meta device (no memory): what save_pretrained's conversions ask


def hf_model(path: str) -> HfModel | None:
    """transformers' config and names for the local GGUF at `path`: the config class its model_type
    names, built from load_gguf_checkpoint's config dict (as PretrainedConfig.from_pretrained does with
    a gguf_file), and its get_gguf_hf_weights_map over that model built on the meta device (no memory,
    no weights, no code from the file); None where transformers does not load the architecture."""
    layout = hf_layout(path)
    if layout is None:
        return None
    with quiet_libraries():
        import torch
        import transformers.modeling_gguf_pytorch_utils as tg
        from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in layout.config.items() if not k.startswith("_")}
    try:
        with torch.device("meta"), quiet_libraries():  # building imports the model's modules (torchao...)
            config = AutoConfig.for_model(**settings)
            model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    except ValueError:
        return None  # no causal-LM class for this model_type
    with _one_name_map():
        names = tg.get_gguf_hf_weights_map(model, layout.processor)
    config.architectures = [type(model).__name__]  # as save_pretrained of the loaded model records it
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return HfModel(config.to_dict(), names, shapes, layout, model)


@contextmanager
def _one_name_map() -> Iterator[None]:
    """gguf-py's TensorNameMap built once per (architecture, block count) while transformers maps names: its
    get_gguf_hf_weights_map recurses into every submodule and builds the whole model's map at each one
    (~18 ms for 32 blocks, so 7.5 s for a 32-layer llama's 423 modules, over a minute for 80 layers). The
    map is read, never changed, so one object serves every submodule."""
    import gguf

    build = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = cache(build)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = build


def _filled(config: dict[str, Any], arch: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """`config` with the fields transformers leaves at their defaults (UNMAPPED) taken from the GGUF's
    metadata, where the file has the key and transformers did not set the field."""
    for key, field in UNMAPPED.get(str(config.get("model_type", "")), {}).items():
        value = metadata.get(f"{arch}.{key}")
        if field not in config and isinstance(value, int) and not isinstance(value, bool):
            config[field] = value
    return config


def unread_metadata(path: str, model_type: str) -> dict[str, Any]:
    """The GGUF's scalar `{arch}.*` metadata that transformers' config mapping does not read (nor UNMAPPED):
    what a config-built shape that disagrees with the file's may have missed."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    arch = _architecture(path)
    mapped = cast("dict[str, Any]", GGUF_CONFIG_MAPPING.get(model_type, {}))
    read = set(mapped) | set(UNMAPPED.get(model_type, {}))
    return {k: v for k, v in _metadata(path).items()
            if k.startswith(f"{arch}.") and k.removeprefix(f"{arch}.") not in read and isinstance(v, (int, float, str))}


def _metadata(path: str) -> dict[str, Any]:
    from .read import read_parts

    return dict(read_parts(path)[0].metadata)


def _architecture(path: str) -> str:
    return str(_metadata(path).get("general.architecture", ""))


__all__ = ["UNMAPPED", "HfLayout", "HfModel", "hf_layout", "hf_model", "transformers_here", "unread_metadata"]
