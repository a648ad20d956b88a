"""A GGUF in Hugging Face's layout, the way transformers' own GGUF loading sees it: the config it builds
from the metadata (`load_gguf_checkpoint`) and its per-architecture TensorProcessor, which undoes what
llama.cpp's converter changed (the q/k rows permuted for rope in llama-family models, ...). transformers
is optional: without it (or for an architecture it does not load) there is no HF layout, only names."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class HfLayout:
    """transformers' view of one GGUF: its config (as load_gguf_checkpoint parses it) and the processor
    whose `process` turns a dequantized GGUF tensor into the HF tensor."""

    architecture: str
    config: dict[str, Any]
    processor: Any

    def undo(self, gguf_name: str, values: np.ndarray) -> np.ndarray:
        """`values` (torch-order shape) as transformers loads them; unchanged where its processor keeps
        them, or where it splits them into other tensors (stacked MoE experts: not undone here)."""
        out = self.processor.process(weights=values, name=gguf_name, tensor_key_mapping={},
                                     parsed_parameters={"tensors": {}, "config": self.config})
        w = getattr(out, "weights", None)
        return values if w is None or w.shape != values.shape else w


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
    import transformers.modeling_gguf_pytorch_utils as tg

    try:
        parsed = tg.load_gguf_checkpoint(path, return_tensors=False)
    except (ValueError, NotImplementedError, KeyError):
        return None  # "GGUF model with architecture X is not supported yet"
    config = dict(parsed.get("config", {}))
    arch = _architecture(path)
    proc = tg.TENSOR_PROCESSORS.get(arch, tg.TensorProcessor)(config=config)
    return HfLayout(arch, config, proc)


def _architecture(path: str) -> str:
    from .read import read_parts

    return str(read_parts(path)[0].metadata.get("general.architecture", ""))


__all__ = ["HfLayout", "hf_layout", "transformers_here"]
