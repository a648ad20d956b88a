"""The one ordered list of format handlers. Those without magic bytes (a DCP folder, a sharded index
by its name) are asked first, before a byte is read; the rest in the loaders' order: torch.load tries
zip, then tar (tarfile's own test), then pickle, and a tar header is tested before a
safetensors-looking one. Adding a format: a module with a FormatHandler, and one line here."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..state import Checkpoint, Format
from . import dcp, gguf, npy, onnx, pt2, safetensors, sharded, torchlegacy, torchtar, torchzip
from .handler import FormatHandler

if TYPE_CHECKING:
    from ..io.values import ValueReader

REGISTRY: tuple[FormatHandler, ...] = (
    dcp.HANDLER,
    sharded.HANDLER,
    pt2.HANDLER,  # before the torch zip: it hands a zip that is no .pt2 on to it
    torchzip.HANDLER,
    torchtar.HANDLER,
    safetensors.HANDLER,
    npy.HANDLER,
    gguf.HANDLER,
    onnx.HANDLER,  # ir_version's varint first: no pickle opcode (0x08), so before the pickle reader
    torchlegacy.HANDLER,  # last: any pickle opcode byte starts a stream pickle.load would run
)


def values_of(ck: Checkpoint, hf_layout: bool = False) -> AbstractContextManager[ValueReader]:
    """The value reader of `ck`: its format handler's `values` hook, so that every value pass (stats,
    show, check, diff) reads a format's tensors the way that format says (dequantized, assembled...).
    With `hf_layout` a GGUF's values are read as transformers loads them (gguf/hf.py): a diff against
    another format, a convert to a Hugging Face folder."""
    if hf_layout and ck.format is Format.GGUF:
        from .gguf.values import gguf_reader

        return gguf_reader(ck, hf=True)
    for handler in REGISTRY:
        if handler.format == ck.format:
            return handler.values(ck)
    from ..io.values import value_reader

    return value_reader(ck)
