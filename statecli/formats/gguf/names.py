"""GGUF tensor names for another checkpoint's names (Hugging Face's), through gguf-py's TensorNameMap
for the GGUF's `general.architecture`: what lets diff set a GGUF beside the safetensors it came from."""

from __future__ import annotations

from ...extras import missing_extra
from .header import Header


def gguf_names(head: Header, n_blocks: int, names: list[str]) -> tuple[str | None, dict[str, str]]:
    """(architecture, {name: GGUF name}) for the `names` gguf-py's map knows; (None, {}) when the GGUF
    names no architecture gguf-py knows. A missing gguf-py is MissingExtra (exit 2, naming the extra)."""
    try:
        import gguf
    except ModuleNotFoundError as exc:
        raise (missing_extra(exc) or exc) from None
    arch = head.metadata.get("general.architecture")
    found = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), None)
    if found is None:
        return None, {}
    tmap = gguf.get_tensor_name_map(found, n_blocks)
    out = {}
    for name in names:
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is not None:
            out[name] = new
    return str(arch), out


__all__ = ["gguf_names"]
