"""Bits per weight of a quantized checkpoint: by scheme, by module pattern (layer indices folded:
"model.layers.*.mlp.down_proj"), over the quantized weights only and over every parameter. Counts
are logical (a quantized weight's numel is its dequantized shape's), bytes are stored bytes with
scales and zeros. One home for these figures: inspect and size both show this object."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..qtensor import BitsRow
from ..state import Checkpoint, Entry, Kind
from ..units import fmt_count

__all__ = ["BitsRow", "QuantSummary", "bits_rule", "bits_value", "quant_summary", "quantization_rule"]

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


@dataclass(frozen=True)
class QuantSummary:
    methods: tuple[str, ...]
    inferred: bool
    quantized: BitsRow  # the quantized weights alone
    model: BitsRow  # every parameter (quantized or not)
    by_scheme: tuple[BitsRow, ...]
    by_module: tuple[BitsRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "inferred": self.inferred, "quantized": self.quantized.to_dict(),
                "parameters": self.model.to_dict(), "by_scheme": {r.key: r.to_dict() for r in self.by_scheme},
                "by_module": {r.key: r.to_dict() for r in self.by_module}}


def quant_summary(entries: list[Entry] | tuple[Entry, ...]) -> QuantSummary | None:
    """The bits-per-weight summary of the model state's entries; None where nothing is quantized."""
    params = [e for e in entries if e.tensor is not None and e.kind is Kind.PARAMETER and e.group == ""]
    quant = [e for e in params if e.tensor is not None and e.tensor.quant is not None]
    if not quant:
        return None
    schemes: dict[str, list[Entry]] = {}
    modules: dict[str, list[Entry]] = {}
    for e in quant:
        assert e.tensor is not None and e.tensor.quant is not None
        schemes.setdefault(e.tensor.quant.scheme, []).append(e)
        module = e.name.removesuffix(".weight") if e.name.endswith(".weight") else e.name  # gpt-oss: "experts.down_proj"
        modules.setdefault(_INDEX.sub("*", module), []).append(e)
    infos = [e.tensor.quant for e in quant if e.tensor is not None and e.tensor.quant is not None]
    return QuantSummary(methods=tuple(dict.fromkeys(q.method for q in infos)), inferred=any(q.inferred for q in infos),
                        quantized=_row("quantized weights", quant), model=_row("all parameters", params),
                        by_scheme=tuple(_row(k, v) for k, v in schemes.items()),
                        by_module=tuple(_row(k, v) for k, v in modules.items()))


def _row(key: str, entries: list[Entry]) -> BitsRow:
    # Parameters own their storage in the formats quantized weights come in (safetensors): bytes add up.
    return BitsRow(key, len(entries), sum(e.tensor.numel for e in entries if e.tensor is not None),
                   sum(e.tensor.nbytes for e in entries if e.tensor is not None))


# -- check rules (analyses/check.py wraps each answer in a Finding) ---------------------------------

def bits_value(value: Any, key: str, source: str) -> float:
    """A --bits-per-weight-max value: a positive number (a string from the command line, a TOML number)."""
    from ..errors import UsageError

    try:
        bits = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        bits = -1.0
    if not bits > 0:
        raise UsageError(source, f"{key} must be a positive number of bits, e.g. 4.5")
    return bits


def bits_rule(ck: Checkpoint, limit: float) -> tuple[bool, str]:
    """The parameters' stored bits per weight (scales and zeros included) at most `limit`."""
    q = quant_summary(ck.entries)
    params = [e for e in ck.entries if e.tensor is not None and e.kind is Kind.PARAMETER and e.group == ""]
    whole = q.model if q is not None else _row("all parameters", params)
    bpw = whole.bits_per_weight
    if bpw is None:
        return True, "no parameters"
    quant = f"; quantized weights {q.quantized.bits_per_weight:.3f}" if q and q.quantized.bits_per_weight else ""
    return bpw <= limit, f"{bpw:.3f} bits/weight over {fmt_count(whole.numel)} parameters (at most {limit:g}){quant}"


def quantization_rule(ck: Checkpoint, methods: tuple[str, ...]) -> tuple[bool, str]:
    """Quantized with one of `methods`, and every 2-D weight of a linear layer quantized but those in
    the config's ignore list. Which weights are linear is told by name (embeddings and 1-D weights are
    not; without a model definition this is an inference, said in the reason)."""
    from ..formats.quant import find_config
    from ..formats.quant.config import Method

    q = quant_summary(ck.entries)
    if q is None:
        return False, f"not quantized (wanted: {', '.join(methods)})"
    other = [m for m in q.methods if m not in methods]
    if other:
        return False, f"quantized with {', '.join(q.methods)} (allowed: {', '.join(methods)})"
    cfg, _ = find_config(ck.path)
    plain = [e.name for e in ck.entries if e.group == "" and e.kind is Kind.PARAMETER and e.tensor is not None
             and e.tensor.quant is None and len(e.tensor.shape) == 2 and e.name.endswith(".weight")
             and not _EMBEDDING.search(e.name) and not (cfg is not None and cfg.ignored(e.name.removesuffix(".weight")))]
    # transformers' quantizers (bitsandbytes, GPTQ, AWQ, fp8, torchao, quanto...) keep the output head unquantized
    # unless the config lists its own modules to skip (get_keys_to_not_convert); compressed-tensors lists it itself.
    implicit = cfg is None or (not cfg.ignore and cfg.method is not Method.COMPRESSED_TENSORS)
    heads = [n for n in plain if implicit and _HEAD.search(n)]
    plain = [n for n in plain if n not in heads]
    if plain:
        return False, (f"{len(plain)} linear weight(s) not quantized and not in the ignore list: {', '.join(plain[:4])}"
                       " (linear layers told by name)")
    ignored = f"; ignore list {', '.join(cfg.ignore)}" if cfg is not None and cfg.ignore else ""
    kept = f"; output head {', '.join(heads)} unquantized, as transformers leaves it by default" if heads else ""
    return True, f"{q.quantized.tensors} weight(s) quantized with {', '.join(q.methods)}{ignored}{kept}"


def storage_dtypes_rule(ck: Checkpoint, allowed: tuple[str, ...]) -> tuple[bool, str]:
    """Every stored piece's dtype in `allowed`: a quantized weight's parts (packed integers, scales,
    zeros) as stored, every other tensor's own dtype (--param-dtypes matches logical types instead)."""
    wrong: list[str] = []
    for e in ck.entries:
        t = e.tensor
        if t is None:
            continue
        pieces = zip((p for _, p in t.quant.parts), (x.dtype for x in t.quant.tensors)) if t.quant else [(e.name, t.dtype)]
        wrong += [f"{name} ({dtype})" for name, dtype in pieces if dtype not in allowed]
    return not wrong, ("all stored dtypes allowed" if not wrong else
                       f"{len(wrong)} stored tensor(s) outside the allowed dtypes: " + "; ".join(wrong[:5]))


# the output embedding as transformers models name it (get_output_embeddings)
_HEAD = re.compile(r"(^|\.)(lm_head|embed_out)\.weight$")
_EMBEDDING = re.compile(r"(^|\.)(embed\w*|wte|wpe|tok_embeddings|word_embeddings|position_embeddings|shared)\.weight$")
