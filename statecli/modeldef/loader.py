"""transformers' own load path for one meta model: the conversion mapping from_pretrained builds
(renames, MoE fusions), its base-model prefix handling, and its loading step run on meta tensors."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KeyMatch:
    """The model entries one file key becomes on load, and how ("" when the names are equal)."""

    targets: tuple[str, ...]
    how: str = ""


@dataclass(frozen=True)
class HfVerdict:
    """What from_pretrained would report for a state dict: keys after its conversions and ties."""

    missing: frozenset[str]
    unexpected: frozenset[str]
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # model key -> (file shape, model shape)
    errors: dict[str, str] = field(default_factory=dict)  # conversions that failed, by target key


@dataclass
class HfLoader:
    """transformers' load path for one meta model: the conversion mapping from_pretrained builds,
    the base-model prefix it adds or strips, and the model's state keys."""

    model: Any
    transforms: list[Any]
    base_model_prefix: str | None
    state: dict[str, bool]  # model.state_dict() keys (from_pretrained's targets)
    known: set[str]  # every slot, non-persistent buffers included

    def _split(self) -> tuple[list[Any], list[Any]]:
        from transformers.core_model_loading import WeightConverter, WeightRenaming  # type: ignore[import-not-found]

        fresh = copy.deepcopy(self.transforms)  # some renames keep state across keys (GroupWeightRename)
        return ([t for t in fresh if isinstance(t, WeightRenaming)],
                [t for t in fresh if isinstance(t, WeightConverter)])

    def renamed(self, names: Iterable[str]) -> dict[str, tuple[str, Any]]:
        """{file key: (the key from_pretrained loads it as, the converter that takes it or None)},
        in from_pretrained's own order, with its base-model prefix handling."""
        from transformers.core_model_loading import dot_natural_key, rename_source_key

        renamings, converters = self._split()
        by_pattern = {p: c for c in converters for p in c.source_patterns}
        out: dict[str, tuple[str, Any]] = {}
        for key in sorted(names, key=dot_natural_key):
            new, pattern = rename_source_key(key, renamings, converters, self.base_model_prefix, self.state)
            if new not in self.state and key in self.state:
                new, pattern = rename_source_key(key, [], [], self.base_model_prefix, self.state)
            out[key] = (new, by_pattern.get(pattern) if pattern is not None else None)
        return out

    def map_keys(self, names: Iterable[str]) -> dict[str, KeyMatch]:
        out: dict[str, KeyMatch] = {}
        for key, (new, conv) in self.renamed(names).items():
            if conv is not None:
                first = conv.target_patterns[0]
                targets = tuple(t for t in (new.replace(first, p) for p in conv.target_patterns) if t in self.state)
                if targets:
                    out[key] = KeyMatch(targets, f"converted into {', '.join(targets)} by from_pretrained")
            elif new in self.state:
                out[key] = KeyMatch((new,), self._how(key, new))
            elif key in self.known:  # a non-persistent buffer saved anyway: from_pretrained ignores it
                out[key] = KeyMatch((key,))
        return out

    def _how(self, key: str, new: str) -> str:
        p = self.base_model_prefix
        if new == key:
            return ""
        if p and new == f"{p}.{key}":
            return f"base-model prefix {p + '.'!r} added by from_pretrained: {new}"
        if p and key == f"{p}.{new}":
            return f"base-model prefix {p + '.'!r} removed by from_pretrained: {new}"
        return f"renamed to {new} by from_pretrained"

    def verdict(self, tensors: dict[str, tuple[tuple[int, ...], str]]) -> HfVerdict:
        """Run from_pretrained's loading step (conversions included) on meta tensors shaped like the
        file's, then its tie and ignore-pattern steps; raises what transformers raises."""
        import torch
        from transformers.core_model_loading import convert_and_load_state_dict_in_model
        from transformers.modeling_utils import LoadStateDictConfig
        from transformers.utils import logging as hf_logging

        model = copy.deepcopy(self.model)  # loading replaces its parameters; keep the described one intact
        fake = {k: torch.empty(shape, dtype=_dtype(torch, dtype), device="meta") for k, (shape, dtype) in tensors.items()}
        config = LoadStateDictConfig(weight_mapping=copy.deepcopy(self.transforms), device_map={"": "meta"})
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # nothing below the CLI writes to the terminal
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info, _ = convert_and_load_state_dict_in_model(model, fake, config)
                model.tie_weights(missing_keys=info.missing_keys, recompute_mapping=False)
                model._adjust_missing_and_unexpected_keys(info)
        finally:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
        mismatched = {k: (tuple(a), tuple(b)) for k, a, b in info.mismatched_keys}
        errors = {str(k): str(v).splitlines()[0] if str(v) else type(v).__name__
                  for k, v in (info.conversion_errors or {}).items()}
        return HfVerdict(frozenset(info.missing_keys), frozenset(info.unexpected_keys), mismatched, errors)


def _dtype(torch: Any, name: str) -> Any:
    value = getattr(torch, name, None)
    return value if isinstance(value, torch.dtype) else torch.float32
