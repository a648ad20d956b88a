"""Hugging Face models: built from config.json on the meta device in the config's dtype, with
transformers' own key conversions and from_pretrained's load semantics attached (see loader.py)."""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import BadInput, UsageError
from ..extras import quiet_libraries
from ..formats.hfconfig import config_code
from ..io.limits import read_json_file
from .loader import HfLoader
from .model import ModelInfo, describe


def build_hf_model(config_path: str, use_cache: bool = True) -> ModelInfo:
    """Build a Hugging Face architecture from config.json on meta, with transformers (optional), in
    the dtype from_pretrained would use (the config's dtype / torch_dtype). `use_cache`: take the
    description from cache.py when stored (no torch/transformers import), store it when built."""
    if use_cache:
        from . import cache

        cache.BUILD = lambda path: build_hf_model(path, use_cache=False)  # a miss later builds the live model
        hit = cache.lookup(config_path)
        if hit is not None:
            return hit
    started = time.perf_counter()
    with quiet_libraries():  # their import lines (torchao's "Failed to load ...so", torch's) are not ours
        try:
            import transformers
        except ImportError as exc:
            raise UsageError(config_path, "classifying against a Hugging Face config needs transformers",
                             "pip install 'torch-statecli[hf]'") from exc
        import torch

    try:
        raw = read_json_file(config_path)
    except (OSError, ValueError) as exc:
        raise BadInput(config_path, f"unreadable config.json: {exc}") from exc
    archs = raw.get("architectures") if isinstance(raw, dict) else None
    if not archs or not isinstance(archs, list):
        raise UsageError(config_path, "config.json names no architectures")
    code = config_code(config_path)
    if code is not None and (code.model_type is None or code.model_type not in _standard_types()):
        # transformers could only build this config from the folder's own code, which statecli never runs
        raise UsageError(config_path, f"{code.describe()}, and no standard model_type to build instead; statecli "
                                      "never runs a folder's code")
    cls = getattr(transformers, str(archs[0]), None)
    if cls is None:
        raise UsageError(config_path, f"transformers {transformers.__version__} has no class {archs[0]!r}"
                                      + (f" ({code.describe()}; statecli never runs it)" if code else ""))
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # nothing below the CLI writes to the terminal (config advice, etc.)
    try:
        # trust_remote_code=False: an auto_map never makes transformers prompt, nor import the folder's code
        folder = os.path.dirname(os.path.abspath(config_path))
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
        with torch.device("meta"), quiet_libraries():
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
    finally:
        hf_logging.set_verbosity(verbosity)
    info = describe(model, f"{archs[0]} from {config_path}")
    info.base_model_prefix = getattr(model, "base_model_prefix", None) or None
    info.hf = _loader(model, info)
    if info.hf is not None:
        info.renames = [(s, t.target_patterns[0]) for t in info.hf.transforms if type(t).__name__ == "WeightRenaming"
                        for s in t.source_patterns]
    else:  # transformers 4: its documented legacy renames, matched one per key by the report
        info.renames = [(r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias"),
                        (r"\.weight_g$", ".parametrizations.weight.original0"),
                        (r"\.weight_v$", ".parametrizations.weight.original1")]
    if use_cache:
        cache.store(config_path, info, time.perf_counter() - started)
    return info


def _standard_types() -> set[str]:
    """The model types transformers builds from its own code (CONFIG_MAPPING's keys)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return set(CONFIG_MAPPING_NAMES)


def _loader(model: Any, info: ModelInfo) -> HfLoader | None:
    """transformers 5's conversion mapping for this model; None on a transformers without one."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import rename_source_key  # noqa: F401 - the API this relies on
    except ImportError:
        return None
    transforms = list(get_model_conversion_mapping(model))
    return HfLoader(model=model, transforms=transforms, base_model_prefix=info.base_model_prefix,
                    state=dict.fromkeys(info.state_keys, True), known=set(info.slots))
