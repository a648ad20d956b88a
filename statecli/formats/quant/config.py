"""Which quantization scheme a checkpoint says it uses: `quantization_config` of the config.json
beside it (or AutoGPTQ's quantize_config.json / AutoAWQ's quant_config.json), read as plain JSON.
Every method transformers ships a loader for is named; the settings the logical tensors need
(bits, group size, symmetry, act-order, block size, ignore list, compressed-tensors' groups) are
kept, the rest is only shown. Without a config the layouts module infers the scheme from names,
dtypes and shapes and says so."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ...io.limits import read_json_file
from ...io.urls import is_remote

__all__ = ["Method", "QuantConfig", "find_config", "parse_config"]


class Method(StrEnum):
    """quant_method as configs spell it (transformers' QuantizationMethod values)."""

    GPTQ = "gptq"
    AWQ = "awq"
    COMPRESSED_TENSORS = "compressed-tensors"
    BITSANDBYTES = "bitsandbytes"
    FP8 = "fp8"
    MXFP4 = "mxfp4"
    TORCHAO = "torchao"
    QUANTO = "quanto"
    OTHER = "other"


# Config files beside a checkpoint that hold a quantization config, best first: transformers'
# config.json, then the older AutoGPTQ and AutoAWQ files (their whole content is the config).
_FILES = ("config.json", "quantize_config.json", "quant_config.json")


@dataclass(frozen=True)
class GroupArgs:
    """One compressed-tensors config group's weight arguments (what its layers were quantized to)."""

    targets: tuple[str, ...]
    num_bits: int
    type: str  # "int" | "float"
    symmetric: bool
    strategy: str  # "tensor" | "channel" | "group" | "block" | "tensor_group"
    group_size: int | None

    def label(self) -> str:
        kind = ("fp" if self.type == "float" else "int") + str(self.num_bits)
        if self.type == "float" and self.num_bits == 8:
            kind = "fp8 e4m3"
        elif self.type == "float" and self.num_bits == 4:
            kind = "fp4 e2m1"
        sym = "" if self.type == "float" else (" sym" if self.symmetric else " asym")
        gran = f", group {self.group_size}" if self.group_size else f", per-{self.strategy}"
        return f"{kind}{sym}{gran}"

    def matches(self, module: str) -> bool:
        """Whether this group's targets name `module` by regex ("re:..."); class targets ("Linear")
        match every quantized layer not matched by a regex of another group."""
        return any(t.startswith("re:") and re.search(t[3:], module) is not None for t in self.targets)


@dataclass(frozen=True)
class QuantConfig:
    """A checkpoint's quantization settings as its config states them."""

    method: Method
    method_name: str  # as the config spells it (OTHER keeps the original)
    source: str  # the file it came from
    bits: int | None = None
    group_size: int | None = None
    sym: bool | None = None
    desc_act: bool = False
    checkpoint_format: str = ""  # GPTQ's "gptq" (zeros stored minus one) or "gptq_v2"; CT's format
    block: tuple[int, ...] | None = None  # FP8 weight_block_size
    quant_type: str = ""  # bitsandbytes' bnb_4bit_quant_type, torchao's config type
    double_quant: bool = False
    ignore: tuple[str, ...] = ()
    groups: tuple[GroupArgs, ...] = ()
    raw: tuple[tuple[str, Any], ...] = ()  # the config as read, for `convert` to keep

    def ignored(self, module: str) -> bool:
        """Whether `module` is in the ignore list (a name, or "re:" a regex), i.e. left unquantized."""
        for pat in self.ignore:
            if pat.startswith("re:"):
                if re.search(pat[3:], module):
                    return True
            elif module == pat or module.endswith("." + pat):
                return True
        return False

    def group_for(self, module: str) -> GroupArgs | None:
        """The compressed-tensors group that quantized `module`: a regex target first, else a class one."""
        for g in self.groups:
            if g.matches(module):
                return g
        classes = [g for g in self.groups if any(not t.startswith("re:") for t in g.targets)]
        return classes[0] if classes else (self.groups[0] if self.groups else None)


def find_config(checkpoint: str) -> tuple[QuantConfig | None, str | None]:
    """The quantization config beside `checkpoint` (a file, an index or a folder), or (None, why not)
    where a file holds one that cannot be read; (None, None) where there is none."""
    if is_remote(checkpoint):
        return None, None
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint) or os.curdir  # as given
    for name in _FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            data = read_json_file(path)
        except (OSError, ValueError) as exc:
            return None, f"{path}: unreadable ({exc}); quantization scheme inferred from the tensors"
        if not isinstance(data, dict):
            continue
        qc = data.get("quantization_config") if name == "config.json" else data
        if isinstance(qc, dict):
            return parse_config(qc, path), None
        if name == "config.json" and isinstance(data.get("compression_config"), dict):
            return parse_config(data["compression_config"], path), None  # compressed-tensors' older key
    return None, None


def parse_config(qc: dict[str, Any], source: str) -> QuantConfig:
    """A quantization_config dict as a QuantConfig (unknown fields ignored, wrong types as absent)."""
    name = _str(qc.get("quant_method")) or ("gptq" if "desc_act" in qc else "awq" if "zero_point" in qc else "")
    try:
        method = Method(name)
    except ValueError:
        method = Method.OTHER
    common: dict[str, Any] = {"method": method, "method_name": name or "unknown", "source": source,
                              "raw": tuple(qc.items())}
    if method in (Method.GPTQ, Method.AWQ):
        return QuantConfig(**common, bits=_int(qc.get("bits", qc.get("w_bit"))),
                           group_size=_int(qc.get("group_size", qc.get("q_group_size"))),
                           sym=_bool(qc.get("sym")) if "sym" in qc else (not _bool(qc.get("zero_point", True))),
                           desc_act=bool(_bool(qc.get("desc_act"))),
                           checkpoint_format=_str(qc.get("checkpoint_format")) or ("gptq" if method is Method.GPTQ
                                                                                    else _str(qc.get("version"))),
                           ignore=_strs(qc.get("modules_to_not_convert")))
    if method is Method.COMPRESSED_TENSORS:
        return QuantConfig(**common, checkpoint_format=_str(qc.get("format")), ignore=_strs(qc.get("ignore")),
                           groups=_groups(qc.get("config_groups")))
    if method is Method.BITSANDBYTES:
        four = bool(_bool(qc.get("load_in_4bit")) or qc.get("_load_in_4bit"))
        return QuantConfig(**common, bits=4 if four else 8, quant_type=_str(qc.get("bnb_4bit_quant_type")) or "fp4",
                           double_quant=bool(_bool(qc.get("bnb_4bit_use_double_quant"))),
                           ignore=_strs(qc.get("llm_int8_skip_modules")))
    if method is Method.FP8:
        block = qc.get("weight_block_size")
        return QuantConfig(**common, bits=8, quant_type=_str(qc.get("fmt")) or "e4m3",
                           block=tuple(int(b) for b in block) if isinstance(block, list)
                           and all(type(b) is int and b > 0 for b in block) else None,
                           ignore=_strs(qc.get("modules_to_not_convert")))
    if method is Method.MXFP4:
        return QuantConfig(**common, bits=4, group_size=32, ignore=_strs(qc.get("modules_to_not_convert")))
    if method is Method.TORCHAO:
        qt = qc.get("quant_type")
        kind = _str(qt.get("default", {}).get("_type")) if isinstance(qt, dict) and isinstance(qt.get("default"), dict) \
            else _str(qt)
        return QuantConfig(**common, quant_type=kind, ignore=_strs(qc.get("modules_to_not_convert")))
    if method is Method.QUANTO:  # transformers' QuantoConfig: weights "int8" | "int4" | "int2" | "float8"
        return QuantConfig(**common, quant_type=_str(qc.get("weights")), ignore=_strs(qc.get("modules_to_not_convert")))
    return QuantConfig(**common, bits=_int(qc.get("bits")))


def _groups(value: Any) -> tuple[GroupArgs, ...]:
    if not isinstance(value, dict):
        return ()
    out = []
    for g in value.values():
        w = g.get("weights") if isinstance(g, dict) else None
        if not isinstance(w, dict):
            continue
        out.append(GroupArgs(targets=_strs(g.get("targets")), num_bits=_int(w.get("num_bits")) or 8,
                             type=_str(w.get("type")) or "int", symmetric=_bool(w.get("symmetric")) is not False,
                             strategy=_str(w.get("strategy")) or "tensor", group_size=_int(w.get("group_size"))))
    return tuple(out)


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _int(v: Any) -> int | None:
    return v if type(v) is int else None


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _strs(v: Any) -> tuple[str, ...]:
    return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()
