"""Build a user's model definition or a Hugging Face config on the meta device, map checkpoint keys
onto it, and report what loading would say (load_state_dict(strict=True), or from_pretrained)."""

from __future__ import annotations

from .choose import model_for
from .hf import build_hf_model
from .loader import HfLoader, HfVerdict, KeyMatch
from .model import (
    ModelInfo,
    ModelSlot,
    ReportLine,
    build_model,
    describe,
    find_hf_config,
    parse_model_args,
)
from .report import load_report, load_report_notes

__all__ = ["HfLoader", "HfVerdict", "KeyMatch", "ModelInfo", "ModelSlot", "ReportLine", "build_hf_model",
           "build_model", "describe", "find_hf_config", "load_report", "load_report_notes", "model_for",
           "parse_model_args"]
