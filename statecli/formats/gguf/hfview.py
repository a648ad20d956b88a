"""A GGUF's tensors as transformers' GGUF loading gives them: each HF tensor with the GGUF tensors it is
built from and its HF shape. Its TensorProcessor decides: a tensor renamed, transposed (GPT-2), reshaped
(Bloom's fused QKV, Mamba's conv), offset (Gemma/Nemotron norms), or several GGUF tensors into one (the
Qwen2-MoE/MiniMax experts' gate and up into gate_up_proj) or one into several (GPT-OSS experts). Which HF
tensors a GGUF tensor feeds is asked of the processor itself with a small probe (no tensor bytes read);
the values are its own output on the real tensors (`build`), read whole only where it changes them."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from ...state import TensorInfo
from ...vocab import Layout

if TYPE_CHECKING:
    import numpy as np

    from ...errors import BadInput
    from .hf import HfModel

# storage_key prefix of a tensor the processor builds (read whole by the GGUF reader, through `build`)
BUILT_KEY = "gguf->hf:"
_KEPT_DTYPES = ("float16", "float32")  # plain GGUF types transformers keeps as stored; the rest float32


@dataclass(frozen=True)
class HfTensor:
    """One tensor of the HF checkpoint, named as save_pretrained writes it: the GGUF tensors it comes
    from and its info. `built` tensors have a BUILT_KEY info (transformers' output, read whole); the
    others are a GGUF tensor as stored (read range by range like any GGUF tensor). `loaded` names the
    tensor of transformers' loaded model it is saved from, where saving splits or renames it (the
    stacked experts saved one per expert)."""

    name: str
    sources: tuple[str, ...]
    info: TensorInfo
    loaded: str = ""

    @property
    def built(self) -> bool:
        return (self.info.storage_key or "").startswith(BUILT_KEY)

    @property
    def whole(self) -> str:
        """The loaded model's tensor this one is made with (all those with the same are made at once)."""
        return self.loaded or self.name


@dataclass(frozen=True)
class HfView:
    """transformers' view of one GGUF: its model (config, name map), the HF tensors in the GGUF's order,
    the GGUF tensors it does not load, and the stored tensors by GGUF name."""

    model: HfModel
    tensors: tuple[HfTensor, ...]
    skipped: tuple[str, ...]
    stored: dict[str, TensorInfo]

    def by_key(self) -> dict[str, HfTensor]:
        return {str(t.info.storage_key): t for t in self.tensors if t.built}

    def build(self, tensor: HfTensor, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The tensors saved from `tensor.whole`, by name, as transformers makes them from the GGUF
        tensors' `values` (dequantized, torch-order shape): its processor's `process` on each (what it
        returns, or stores in the parameters it is handed: stacked or split experts), then what
        save_pretrained does to that tensor (revert_weight_conversion: one tensor per expert...)."""
        import numpy as np

        names, whole = self.model.names, tensor.whole
        params: dict[str, Any] = {"tensors": {}, "config": self.model.layout.config}
        got: Any = None
        for g in tensor.sources:
            out = self.model.layout.processor.process(weights=values[g], name=g, tensor_key_mapping=names,
                                                      parsed_parameters=params)
            if out.name is not None and names.get(out.name) == whole:
                got = out.weights
        if whole in params["tensors"]:
            got = params["tensors"][whole].numpy()
        if got is None:
            raise ValueError(f"transformers' {type(self.model.layout.processor).__name__} gave no {whole}")
        if not tensor.loaded:
            return {whole: np.asarray(got)}
        import torch

        saved = _saved(self.model, whole, torch.from_numpy(np.ascontiguousarray(got)))
        return {k: v.numpy() for k, v in saved.items()}


def require_fit(view: HfView, path: str) -> None:
    """BadInput where a tensor read as stored has another shape than the config's model gives it: a folder
    whose config.json could not load its weights (a diff compares them as stored)."""
    for t in view.tensors:
        want = view.model.shapes.get(t.name)
        if not t.built and not t.loaded and want is not None and want != t.info.shape:
            raise _misfit(path, view.model, t.name, list(t.sources), view.stored)


def hf_view(path: str) -> HfView | None:
    """transformers' view of the local GGUF at `path` (a split model's first part); None without
    transformers or for an architecture it does not load."""
    from .hf import transformers_here

    if not transformers_here() or "://" in path:
        return None
    st = os.stat(path)
    return _view(path, st.st_mtime_ns, st.st_size)


@cache
def _view(path: str, mtime_ns: int, size: int) -> HfView | None:
    from .hf import hf_model
    from .read import read_parts, tensor_info

    model = hf_model(path)
    if model is None:
        return None
    stored = {r.name: tensor_info(r, head) for head in read_parts(path) for r in head.tensors}
    routes: dict[str, list[str]] = {}
    changed: set[str] = set()
    for g, info in stored.items():
        targets, whole = _route(model, g, info.shape)
        for hf in targets:
            routes.setdefault(hf, []).append(g)
        if whole:
            changed.update(targets)
    _check_shapes(path, model, {hf: srcs for hf, srcs in routes.items() if hf in changed}, stored)
    loaded = [_tensor(model, hf, srcs, stored, hf in changed) for hf, srcs in routes.items()]
    tensors = tuple(t for whole in loaded for t in _as_saved(model, whole))
    fed = {g for srcs in routes.values() for g in srcs}
    return HfView(model, tensors, tuple(g for g in stored if g not in fed), stored)


def _check_shapes(path: str, model: HfModel, routes: dict[str, list[str]], stored: dict[str, TensorInfo]) -> None:
    """BadInput where the model transformers builds from the metadata cannot hold the file's tensors that its
    processor changes (`routes`: those take the config's shape; one it leaves is read as stored): an HF tensor
    (with the others its GGUF tensors feed) whose config shape has another count of values than those GGUF
    tensors, named with the metadata transformers did not read (never a shape made up)."""
    from math import prod

    feeds: dict[str, set[str]] = {}
    for hf, srcs in routes.items():
        for g in srcs:
            feeds.setdefault(g, set()).add(hf)
    for hf, srcs in routes.items():
        group = {t for g in srcs for t in feeds[g]}
        if not all(t in model.shapes for t in group):
            continue
        ggufs = sorted({g for t in group for g in routes[t]})
        if sum(prod(model.shapes[t]) for t in group) == sum(prod(stored[g].shape) for g in ggufs):
            continue
        raise _misfit(path, model, hf, ggufs, stored)


def _misfit(path: str, model: HfModel, hf: str, ggufs: list[str], stored: dict[str, TensorInfo]) -> BadInput:
    from ...errors import BadInput
    from .hf import unread_metadata

    unread = unread_metadata(path, str(model.layout.config.get("model_type", "")))
    extra = ", ".join(f"{k}={v}" for k, v in sorted(unread.items())) or "none"
    return BadInput(path, f"the config transformers builds from the metadata gives {hf} shape "
                          f"{list(model.shapes[hf])}, which does not fit the file's "
                          + ", ".join(f"{g} {list(stored[g].shape)}" for g in ggufs)
                          + f" (metadata transformers does not read: {extra})")


def _route(model: HfModel, gguf_name: str, shape: tuple[int, ...]) -> tuple[list[str], bool]:
    """The HF tensors one GGUF tensor feeds, and whether the processor changes it (so it is read whole):
    its `process` run on a probe with one distinct value per row (shape[0] x 1 x ...)."""
    import numpy as np

    names, layout = model.names, model.layout
    if not shape:
        return ([names[gguf_name]] if gguf_name in names else []), False
    probe = np.arange(shape[0], dtype=np.float32).reshape(shape[0], *([1] * (len(shape) - 1)))
    params: dict[str, Any] = {"tensors": {}, "config": layout.config}
    try:
        with np.errstate(all="ignore"):  # the probe's values mean nothing to a processor's log (Mamba's A)
            out = layout.processor.process(weights=probe, name=gguf_name, tensor_key_mapping=names,
                                           parsed_parameters=params)
    except (ValueError, TypeError, IndexError, KeyError, RuntimeError):
        # a processor that needs the real shape (Bloom's QKV split): it changes the tensor; read whole
        return ([names[gguf_name]] if gguf_name in names else []), True
    targets = list(params["tensors"])
    if out.name is not None and out.name in names:
        targets.append(names[out.name])
    if params["tensors"] or out.name != gguf_name:
        return targets, True
    w = out.weights
    return targets, not (w is probe or (w.shape == probe.shape and np.array_equal(w, probe)))


def _tensor(model: HfModel, hf: str, sources: list[str], stored: dict[str, TensorInfo], changed: bool) -> HfTensor:
    first = stored[sources[0]]
    if len(sources) == 1 and not changed:
        return HfTensor(hf, (sources[0],), first)  # as stored (whatever shape the config would give)
    shape = model.shapes.get(hf, first.shape)
    dtypes = {stored[g].dtype for g in sources}
    dtype = first.dtype if len(dtypes) == 1 and first.dtype in _KEPT_DTYPES else "float32"
    info = TensorInfo(dtype, shape, layout=Layout.STRIDED, storage_key=BUILT_KEY + hf, source=first.source)
    return HfTensor(hf, tuple(sources), info)


def _as_saved(model: HfModel, t: HfTensor) -> list[HfTensor]:
    """`t` as save_pretrained writes it: asked of transformers' revert_weight_conversion on a meta
    tensor (names and shapes, no memory); itself where saving keeps it."""
    import torch

    saved = _saved(model, t.name, torch.empty(t.info.shape, device="meta"))
    if list(saved) == [t.name] or not saved:
        return [t]
    if len(saved) == 1 and tuple(next(iter(saved.values())).shape) == t.info.shape and not t.built:
        return [HfTensor(next(iter(saved)), t.sources, t.info, t.name)]  # renamed only: still read as stored
    return [HfTensor(name, t.sources, replace(t.info, shape=tuple(v.shape), storage_key=BUILT_KEY + name), t.name)
            for name, v in saved.items()]


def _saved(model: HfModel, name: str, tensor: Any) -> dict[str, Any]:
    """What save_pretrained writes for the loaded model's tensor `name` (transformers >= 5 reverts the
    conversions its loading applied: stacked experts back to one tensor per expert); {name: tensor}
    where this transformers has no such step or it does not apply to one tensor alone."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return {name: tensor}
    try:
        out = revert_weight_conversion(model.module, {name: tensor})
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError):
        return {name: tensor}
    return {k: (v[0] if isinstance(v, list) else v) for k, v in out.items()}


__all__ = ["BUILT_KEY", "HfTensor", "HfView", "hf_view", "require_fit"]
