"""Terminal-safe text: checkpoint names are data, never markup; one console factory, one table style."""

from __future__ import annotations

import os
import sys
import unicodedata
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from ..units import plural

if TYPE_CHECKING:
    from ..state import Stats


def escape(text: str) -> str:
    """Make a checkpoint-supplied string safe for a terminal: control, format (bidi) and other
    non-printing characters become visible escapes."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif unicodedata.category(ch)[0] in "CZ" or not ch.isprintable():
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def fmt_float(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def make_console(out: IO[str] | None = None, err: bool = False) -> Any:
    from rich.console import Console
    from rich.text import Text

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would exit 1 here; the reader merely stopped early (`| head`), which render() handles.
            raise BrokenPipeError

        def print(self, *objects: Any, **kwargs: Any) -> None:
            # Word-wrap a line of text to the terminal as rich does, minus the trailing space rich
            # leaves at each break (piped output and README examples stay byte-clean).
            if len(objects) == 1 and isinstance(objects[0], (Text, str)) and not kwargs.get("soft_wrap"):
                text = objects[0] if isinstance(objects[0], Text) else Text(objects[0])
                if not fit:  # piped: one line stays one line (grep, scripts)
                    super().print(text, soft_wrap=True, **{k: v for k, v in kwargs.items() if k != "soft_wrap"})
                    return
                for line in text.wrap(self, self.width):
                    line.rstrip()
                    super().print(line, soft_wrap=True, **{k: v for k, v in kwargs.items() if k != "soft_wrap"})
                return
            super().print(*objects, **kwargs)

    stream = out or (sys.stderr if err else sys.stdout)
    # Piped output is read by people later or by grep: text is not wrapped at all, and renderables
    # that need a width (trees) get a wide one. A terminal, or an explicit COLUMNS, is fitted.
    fit = stream.isatty() or bool(os.environ.get("COLUMNS"))
    width: int | None = None if fit else 160
    height: int | None = None
    if fit and not os.environ.get("COLUMNS"):  # the stream's own terminal (rich assumes 80x25 on TERM=dumb)
        try:
            width, height = os.get_terminal_size(stream.fileno())
        except (AttributeError, OSError, ValueError):  # a tty-like stream without a descriptor
            pass
    return _Console(file=stream, highlight=False, soft_wrap=False, width=width or None, height=height or None)


FINITE_HEADS = ["finite min", "finite max", "finite mean", "finite std"]


def finite_cells(s: Stats | None) -> list[str]:
    """The finite-only figures of a tensor (the headline min/max/mean/std are torch's, NaN and Inf included)."""
    if s is None or s.note is not None:
        return [""] * len(FINITE_HEADS)
    return [fmt_float(v) for v in (s.finite_min, s.finite_max, s.finite_mean, s.finite_std)]


def finite_note(read: Iterable[Stats]) -> str | None:
    """The line under a statistics table where a tensor holds NaN/Inf: min/max/mean/std are torch's (an Inf
    reaches them), while the |x| percentiles and the histogram are of its finite values only."""
    held = [s for s in read if s.has_non_finite and s.finite]
    if not held:
        return None
    holds = f"{plural(len(held), 'tensor')} {'holds' if len(held) == 1 else 'hold'}"
    return f"|x| p50/p99 and histogram are of the finite values only ({holds} NaN/Inf; min/max/mean/std include them)"


def sample_note(read: Iterable[Stats]) -> str | None:
    """The line under a statistics table whose figures marked * come from a random sample: its size."""
    sizes = [s.sampled for s in read if not s.exact]
    if not sizes:
        return None
    return (f"* |x| percentiles and histogram from a uniform random sample of up to {max(sizes):,} values per tensor "
            "(tensors above that size); --exact uses every value")


def first_word(text: str) -> str:
    """A cell at a narrow width (grid.Col.short) reduced to its first word: a quantized dtype "nf4 (bitsandbytes
    nf4, block 64, double quant)" to "nf4" (the quantization table names the scheme)."""
    return text.split(" ")[0]


def short_evidence(text: str) -> str:
    """An evidence cell at a narrow width (grid.Col.short): its first word ("inferred", "model", "stored"), or the
    short word of a source whose first word says nothing alone ("not", two kinds of "pickled"); a format's own
    label (Source.FORMAT: the format's name first, "GGUF tensor") stays whole, never "file"."""
    from ..state import Source

    short = {Source.PICKLED_MODULE: "module", Source.PICKLED_PARAMETER: "Parameter",
             Source.NOT_IN_MODEL: "not in model", Source.NOT_TENSOR: "no tensor"}
    for source, word in short.items():
        if text.startswith(source.value):
            return word
    first = text.split(" ")[0]
    return text if first.isupper() else first
