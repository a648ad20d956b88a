"""The human view of a GGUF's header (gguf_view.GgufView): one line on what it is, the metadata
table, the totals by GGML type with bits per weight and, for `size`, by block."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..units import fmt_bytes, fmt_count
from .grid import GAP, Col, console_width, print_grid
from .text import escape

if TYPE_CHECKING:
    from ..analyses.gguf_view import GgufView
    from ..qtensor import BitsRow


def bpw_text(t: BitsRow) -> str:
    """Bits per weight as every view prints them (2 decimals; '-' without parameters)."""
    bpw = t.bits_per_weight
    return "-" if bpw is None else f"{bpw:.2f}"


def render_gguf_header(v: GgufView, con: Any) -> None:
    from rich.text import Text

    what = [f"GGUF v{v.version}"]
    if v.architecture:
        what.append(escape(v.architecture))
    if v.file_type:
        what.append(f"file type {escape(v.file_type)}")
    what.append(f"{bpw_text(v.total)} bits/weight over {fmt_count(v.total.numel)} weights")
    if v.parts > 1:
        what.append(f"split in {v.parts} parts")
    con.print(Text(", ".join(what) + f"; {v.torch_order_note}"))
    rows = [[escape(r.key), r.type, _value_text(r.type, r.text)] for r in v.metadata]
    room = _value_room(console_width(con), rows)
    if room is not None:  # a value longer than its room is cut (keys never are; a number is never split)
        rows = [[k, t, escape(x if len(x) <= room else x[:max(room - 3, 1)] + "...")] for k, t, x in rows]
    else:
        rows = [[k, t, escape(x)] for k, t, x in rows]
    more = f" ({v.hidden_keys} more: --metadata)" if v.hidden_keys else ""
    print_grid(con, f"metadata{more}", [Col("key", key=True), Col("type"), Col("value")], rows)


_VALUE_MIN = 12  # narrower than this, the keys take lines of their own and the values the rest


def _value_room(width: int | None, rows: list[list[str]]) -> int | None:
    """The characters a value may take so each row fits `width` (None: piped, values whole)."""
    if width is None or not rows:
        return None
    typew = max(len("type"), *(len(r[1]) for r in rows))
    room = width - max(len("key"), *(len(r[0]) for r in rows)) - typew - 2 * GAP
    return room if room >= _VALUE_MIN else max(width - len("key") - typew - 2 * GAP, 1)


def _value_text(vtype: str, text: str) -> str:
    """A float32 value as the shortest text that reads back as the same float32 (1e-06, not the float64
    digits 9.999999747378752e-07 of its widened value); other values as the reader gives them."""
    if vtype != "float32":
        return text
    try:
        import numpy as np

        return str(np.float32(float(text)))
    except ValueError:
        return text


def render_gguf_totals(v: GgufView, con: Any, blocks: bool = False) -> None:
    cols = [Col("type"), Col("tensors", right=True), Col("params", right=True), Col("size", right=True),
            Col("bits/weight", right=True)]
    rows = [[escape(t.key), str(t.tensors), fmt_count(t.numel), fmt_bytes(t.nbytes), bpw_text(t)] for t in v.by_type]
    rows.append(["total", str(v.total.tensors), fmt_count(v.total.numel), fmt_bytes(v.total.nbytes), bpw_text(v.total)])
    print_grid(con, "by GGML type", cols, rows)
    if blocks:
        cols = [Col("block")] + cols[1:] + [Col("types", wrap=True)]
        rows = [[escape(b.key), str(b.tensors), fmt_count(b.numel), fmt_bytes(b.nbytes), bpw_text(b), ", ".join(b.types)]
                for b in v.by_block]
        print_grid(con, "by block", cols, rows)


def render_quant_error(err: dict[str, Any], con: Any) -> None:
    """A GGUF against its reference (DiffResult.quantization_error): NMSE and SNR per block over its
    quantized tensors, then per tensor (the unquantized ones too, typed "-"); names are never cut."""
    def cell(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    figures = [Col("NMSE", right=True), Col("SNR dB", right=True)]
    rows = [[escape(b), cell(r["nmse"], ".3g"), cell(r["snr_db"], ".1f")] for b, r in err["blocks"].items()]
    print_grid(con, "quantization error by block (quantized tensors only)",
               [Col("block"), *figures], rows)
    rows = [[escape(n), r["type"] or "-", cell(r["nmse"], ".3g"), cell(r["snr_db"], ".1f")]
            for n, r in err["tensors"].items()]
    print_grid(con, "quantization error by tensor (type -: not quantized)",
               [Col("tensor", key=True), Col("type"), *figures], rows)


__all__ = ["bpw_text", "render_gguf_header", "render_gguf_totals", "render_quant_error"]
