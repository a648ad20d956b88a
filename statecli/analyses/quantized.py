"""Bits per weight of a quantized checkpoint: by scheme, by module pattern (layer indices folded:
"model.layers.*.mlp.down_proj"), over the quantized weights only and over every parameter. Counts
are logical (a quantized weight's numel is its dequantized shape's), bytes are stored bytes with
scales and zeros. One home for these figures: inspect and size both show this object."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..state import Entry, Kind
from ..units import fmt_bytes, fmt_count

__all__ = ["BitsRow", "QuantSummary", "quant_summary"]

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


@dataclass(frozen=True)
class BitsRow:
    """One line of the summary: tensors, logical values, stored bytes, and bits per value."""

    key: str
    tensors: int
    numel: int
    nbytes: int

    @property
    def bits_per_weight(self) -> float | None:
        return self.nbytes * 8 / self.numel if self.numel else None

    def to_dict(self) -> dict[str, Any]:
        bpw = self.bits_per_weight
        return {"tensors": self.tensors, "numel": self.numel, "nbytes": self.nbytes,
                "bits_per_weight": round(bpw, 4) if bpw is not None else None}

    def cells(self) -> list[str]:
        bpw = self.bits_per_weight
        return [self.key, str(self.tensors), fmt_count(self.numel), fmt_bytes(self.nbytes),
                "-" if bpw is None else f"{bpw:.3f}"]


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
