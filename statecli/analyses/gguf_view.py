"""What `inspect` and `size` add for a GGUF: its header (version, architecture, file type, parts),
the metadata (summarised for tables, whole for JSON) and the totals by GGML type and by block
(`blk.N`) with bits per weight, from the parsed headers (no tensor bytes)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..qtensor import BitsRow
from ..state import Checkpoint, Format

BLOCK = re.compile(r"^(blk\.\d+)\.")
OUTSIDE_BLOCKS = "(outside blocks)"
_HF_BLOCK = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")
# Keys shown without --metadata: what the model is; the tokenizer's arrays and templates wait for it.
_SHORT = re.compile(r"^(general\.|split\.|tokenizer\.ggml\.model$)")


def _row_dict(row: BitsRow) -> dict[str, Any]:
    """GGUF's JSON shape of a row: the count as "params", bits per weight unrounded."""
    return row.to_dict(count="params", digits=None)


@dataclass(frozen=True)
class MetaRow:
    key: str
    type: str
    text: str  # as a table shows it (arrays summarised)


@dataclass(frozen=True)
class GgufView:
    version: int
    architecture: str | None
    file_type: str | None
    alignment: int
    parts: int
    total: BitsRow
    by_type: tuple[BitsRow, ...]
    by_block: tuple[BitsRow, ...]
    metadata: tuple[MetaRow, ...]  # the rows a table shows (all with --metadata)
    hidden_keys: int  # keys left out of the table without --metadata
    header: Any  # formats.gguf.header.Header of the first part: every key, whole, for JSON
    torch_order_note: str

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "architecture": self.architecture, "file_type": self.file_type,
                "alignment": self.alignment, "parts": self.parts, "shapes": self.torch_order_note,
                "total": _row_dict(self.total), "by_type": {t.key: _row_dict(t) for t in self.by_type},
                "by_block": {b.key: _row_dict(b) for b in self.by_block},
                "metadata_types": {r.key: r.type for r in self.metadata} if self.hidden_keys == 0 else None,
                "metadata": self.metadata_json()}

    def metadata_json(self) -> dict[str, Any]:
        """Every key, whole (a vocabulary's every token): built only when JSON asks for it."""
        from ..formats.gguf.read import to_json

        return {k: to_json(v) for k, v in self.header.metadata.items()}


def gguf_view(ck: Checkpoint, all_metadata: bool = False) -> GgufView | None:
    """The GGUF view of a checkpoint read from a GGUF, else None."""
    if ck.format is not Format.GGUF:
        return None
    from ..formats.gguf.read import TORCH_ORDER, read_parts, summary

    parts = read_parts(ck.path)
    head = parts[0]
    records = [r for p in parts for r in p.tensors]
    by_type: dict[str, list[int]] = {}
    by_block: dict[str, list[Any]] = {}
    for r in records:
        acc = by_type.setdefault(r.type.name, [0, 0, 0])
        acc[0], acc[1], acc[2] = acc[0] + 1, acc[1] + r.numel, acc[2] + r.nbytes
        m = BLOCK.match(r.name)
        blk = by_block.setdefault(m.group(1) if m else OUTSIDE_BLOCKS, [0, 0, 0, set()])
        blk[0], blk[1], blk[2] = blk[0] + 1, blk[1] + r.numel, blk[2] + r.nbytes
        blk[3].add(r.type.name)
    total = BitsRow("total", len(records), sum(r.numel for r in records), sum(r.nbytes for r in records))
    shown = summary(head)
    rows = [MetaRow(k, head.value_types[k].name.lower(), _one_line(shown[k])) for k in head.metadata
            if all_metadata or _SHORT.match(k) or k.startswith(f"{head.metadata.get('general.architecture')}.")]
    return GgufView(
        version=head.version, architecture=_str(head.metadata.get("general.architecture")),
        file_type=shown.get("general.file_type"), alignment=head.alignment, parts=len(parts), total=total,
        by_type=tuple(sorted((BitsRow(k, v[0], v[1], v[2]) for k, v in by_type.items()), key=lambda t: (-t.nbytes, t.key))),
        by_block=tuple(BitsRow(k, v[0], v[1], v[2], tuple(sorted(v[3]))) for k, v in sorted(
            by_block.items(), key=lambda kv: _block_order(kv[0]))),
        metadata=tuple(rows), hidden_keys=len(head.metadata) - len(rows),
        header=head, torch_order_note=TORCH_ORDER)


@dataclass(frozen=True)
class MetaChange:
    """A metadata key of two GGUFs that differs: removed, added or changed (values as tables show them;
    for arrays of equal length, the first index that differs)."""

    key: str
    status: str
    a: str | None
    b: str | None
    first_difference: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "status": self.status, "a": self.a, "b": self.b,
                "first_difference": self.first_difference}


def metadata_changes(a: Checkpoint, b: Checkpoint) -> tuple[MetaChange, ...]:
    """The metadata keys two GGUFs differ in (empty unless both are GGUF), in A's key order then B's."""
    if a.format is not Format.GGUF or b.format is not Format.GGUF:
        return ()
    from ..formats.gguf.header import GgufArray
    from ..formats.gguf.read import read_parts, summary

    ma, mb = read_parts(a.path)[0].metadata, read_parts(b.path)[0].metadata
    ta, tb = summary(read_parts(a.path)[0]), summary(read_parts(b.path)[0])
    out = []
    for key in list(ma) + [k for k in mb if k not in ma]:
        if key not in mb:
            out.append(MetaChange(key, "removed", _one_line(ta[key]), None))
        elif key not in ma:
            out.append(MetaChange(key, "added", None, _one_line(tb[key])))
        elif ma[key] != mb[key]:
            x, y = ma[key], mb[key]
            first = None
            if isinstance(x, GgufArray) and isinstance(y, GgufArray):
                first = next((i for i, (p, q) in enumerate(zip(x.values, y.values)) if p != q), None)
                first = min(len(x), len(y)) if first is None else first
            out.append(MetaChange(key, "changed", _one_line(ta[key]), _one_line(tb[key]), first))
    return tuple(out)


def align_names(a: Checkpoint, b: Checkpoint) -> tuple[Checkpoint, Checkpoint, str | None, dict[str, str]]:
    """A GGUF beside another format (the safetensors it was converted from): where transformers loads
    the GGUF, its tensors as transformers builds them (formats/gguf/hfview.py) and the other's names
    matched by transformers' own name map; else the other's names renamed to GGUF names by gguf-py's
    TensorNameMap (formats/gguf/names.py), values as stored, said so. Both unchanged unless exactly
    one is a GGUF. A tensor that alone is made from one GGUF tensor keeps the GGUF name; one made of
    several, or one of several made from one (stacked experts saved one per expert), has its HF name."""
    if (a.format is Format.GGUF) == (b.format is Format.GGUF):
        return a, b, None, {}
    from ..formats.gguf.hfview import hf_view

    g, ref = (a, b) if a.format is Format.GGUF else (b, a)
    view = hf_view(g.path)
    names = [e.name for e in ref.entries if e.group == "" and e.tensor is not None]
    types: dict[str, str] = {}  # a tensor transformers builds (dequantized) -> the GGML type it was stored in
    if view is None:
        g_out, mapping, note = g, *_gguf_names(g, ref, names)
    else:
        fed = Counter(t.sources[0] for t in view.tensors if len(t.sources) == 1)
        label = {t.name: t.sources[0] if len(t.sources) == 1 and fed[t.sources[0]] == 1 else t.name
                 for t in view.tensors}
        by_name = {e.name: e for e in g.entries}
        built = tuple(replace(by_name[t.sources[0]], name=label[t.name], tensor=t.info) for t in view.tensors)
        for t in view.tensors:
            source = by_name[t.sources[0]].tensor
            if t.info.quant is None and source is not None and source.quant is not None:
                types[label[t.name]] = source.dtype
        g_out = replace(g, entries=built + tuple(by_name[n] for n in view.skipped))
        mapping = {n: label[n] for n in names if n in label}
        note = (f"{len(mapping)} of {len(names)} names of {ref.path} matched by transformers' GGUF name map; the "
                f"GGUF's values read as transformers loads them (its {type(view.model.layout.processor).__name__} "
                "undoes llama.cpp's converter changes: q/k rows permuted for rope, fused, stacked or transposed "
                "tensors, norm offsets)")
    renamed = replace(ref, entries=tuple(replace(e, name=mapping[e.name]) if e.group == "" and e.name in mapping else e
                                         for e in ref.entries))
    return ((g_out, renamed, note) if g is a else (renamed, g_out, note)) + (types,)


def _gguf_names(g: Checkpoint, ref: Checkpoint, names: list[str]) -> tuple[dict[str, str], str]:
    """The other's names renamed to GGUF names by gguf-py's TensorNameMap, and the note saying that
    the converter's changes are not undone."""
    from ..formats.gguf.hf import transformers_here
    from ..formats.gguf.names import gguf_names
    from ..formats.gguf.read import read_parts

    blocks = {int(m.group(1)[4:]) for e in g.entries if (m := BLOCK.match(e.name))}
    arch, mapping = gguf_names(read_parts(g.path)[0], max(blocks, default=-1) + 1, names)
    why = "transformers does not load this GGUF" if transformers_here() else "transformers is not installed"
    return mapping, (f"{len(mapping)} of {len(names)} names of {ref.path} mapped to GGUF names by gguf-py's "
                     f"TensorNameMap for {arch!r}; llama.cpp's converter changes (q/k rows permuted for rope, fused "
                     f"or stacked tensors) are NOT undone ({why}): names only, so those tensors' values differ by "
                     "that layout")


def quant_error(keys: tuple[Any, ...], quantized: Mapping[str, str]) -> dict[str, Any]:
    """NMSE and SNR (dB) of each compared tensor (its GGML type where `quantized`, name -> type, has it)
    and each block over its quantized tensors only, from the diff's sums: how much the quantization cost
    ("||b-a||^2 / ||a||^2" with A the reference side as diff orders them). A block pooling its unquantized
    F32 norms would look ~10 dB better than every quantized tensor in it (the norms dominate ||a||^2)."""
    def row(s: Any) -> dict[str, Any]:
        nmse = s.dd / s.aa if s.aa > 0 else None
        snr = None if not nmse else -10 * math.log10(nmse)  # None where exact (JSON has no inf)
        return {"nmse": nmse, "snr_db": snr}

    tensors: dict[str, Any] = {}
    blocks: dict[str, Any] = {}
    for k in keys:
        if k.sums is None:
            continue
        tensors[k.name] = {"type": quantized.get(k.name), **row(k.sums)}
        if k.name not in quantized:
            continue
        blk = _block_of(k.name)
        blocks[blk] = blocks[blk] + k.sums if blk in blocks else k.sums
    return {"tensors": tensors, "blocks_over": "quantized tensors",
            "blocks": {b: row(s) for b, s in sorted(blocks.items(), key=lambda kv: _block_order(kv[0]))}}


def _block_of(name: str) -> str:
    """A compared tensor's block: `blk.N` of its GGUF name, or of its HF name's `layers.N` where it
    keeps one (a stacked expert saved one per expert)."""
    m = BLOCK.match(name)
    if m:
        return m.group(1)
    hf = _HF_BLOCK.search(name)
    return f"blk.{hf.group(1)}" if hf else OUTSIDE_BLOCKS


def key_names(ck: Checkpoint) -> list[str]:
    """The names `check`'s key rules match: the entries', and a GGUF's metadata keys (a required
    `general.license`)."""
    return [e.name for e in ck.entries] + (list(ck.metadata) if ck.format is Format.GGUF else [])


def _one_line(text: str, width: int = 100) -> str:
    first = text.splitlines()[0] if text else ""
    return first[:width] + ("..." if len(first) > width or "\n" in text else "")


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _block_order(key: str) -> tuple[int, int]:
    m = re.match(r"blk\.(\d+)$", key)
    return (0, int(m.group(1))) if m else (1, 0)


__all__ = ["GgufView", "MetaChange", "MetaRow", "align_names", "gguf_view", "key_names", "metadata_changes",
           "quant_error"]
