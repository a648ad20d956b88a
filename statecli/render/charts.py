"""Text pictures shared by every view: horizontal bars in eighth blocks and one-line histograms."""

from __future__ import annotations

from collections.abc import Sequence

_EIGHTHS = " ▏▎▍▌▋▊▉"
_LEVELS = "▁▂▃▄▅▆▇█"


def bar(fraction: float | None, width: int = 30) -> str:
    """A horizontal bar `fraction` (0..1) of `width` cells long, in eighth-cell steps; a non-zero
    fraction always shows at least a sliver, so a module that moved a little is never blank; width 0: no bar."""
    if fraction is None or fraction != fraction or fraction <= 0 or width <= 0:
        return ""
    eighths = max(1, round(min(fraction, 1.0) * width * 8))
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def spark(counts: Sequence[int]) -> str:
    """A histogram in one line of block characters, scaled to its tallest bin; an empty bin is a
    space and any non-empty bin at least ▁, so lone outliers stay visible."""
    top = max(counts, default=0)
    if top <= 0:
        return ""
    out = []
    for c in counts:
        if c <= 0:
            out.append(" ")
        else:
            out.append(_LEVELS[min(7, max(0, -(-c * 8 // top) - 1))])
    return "".join(out)


def scale(values: Sequence[float | None]) -> float:
    """The largest finite, positive value: bars are drawn relative to it (0 when there is none)."""
    finite = [v for v in values if v is not None and v == v and v not in (float("inf"),) and v > 0]
    return max(finite, default=0.0)


def rebin(counts: Sequence[int], bins: int) -> list[int]:
    """`counts` merged into at most `bins` bins (neighbours summed), for a narrower picture."""
    n = len(counts)
    if n <= bins:
        return list(counts)
    return [sum(counts[i * n // bins:(i + 1) * n // bins]) for i in range(bins)]


# SVG for the HTML report: inline, no xmlns or any other URL (HTML5 does not need one), sizes in px.
def _x(text: str) -> str:
    from html import escape

    return escape(text, quote=True)


def svg_bar_chart(items: Sequence[tuple[str, float | None, str]], title: str, width: int = 720,
                  label_width: int = 260, color: str = "#4c78a8") -> str:
    """A horizontal bar chart: one row per (label, value, value text), bars scaled to the largest
    value; long labels are cut in the drawing and kept whole in the row's tooltip."""
    row, top = 18, scale([v for _, v, _ in items])
    height = row * len(items) + 24
    # Room after the longest bar for the longest value text (~7 px a character), so no label is cut.
    bar_w = width - label_width - max(110, 7 * max((len(t) for _, _, t in items), default=0) + 12)
    out = [f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           f"<title>{_x(title)}</title>",
           f'<text x="0" y="14" class="ct">{_x(title)}</text>']
    for i, (label, value, text) in enumerate(items):
        y = 24 + i * row
        frac = 0.0 if not value or value != value or top <= 0 else 1.0 if value == float("inf") else min(1.0, value / top)
        shown = label if len(label) <= 38 else "…" + label[-37:]
        w = max(1.0, frac * bar_w) if frac > 0 else 0.0
        out.append(f'<g><title>{_x(label)}: {_x(text)}</title>'
                   f'<text x="{label_width - 6}" y="{y + 12}" text-anchor="end" class="cl">{_x(shown)}</text>'
                   f'<rect class="bar" x="{label_width}" y="{y + 2}" width="{w:.1f}" height="{row - 5}" fill="{color}"/>'
                   f'<text x="{label_width + w + 4:.1f}" y="{y + 12}" class="cv">{_x(text)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def svg_histogram(counts: Sequence[int], width: int = 96, height: int = 18, title: str = "",
                  color: str = "#4c78a8") -> str:
    """Vertical bars of `counts` in a small box (the inline picture of a stats row, or `show`'s)."""
    top = max(counts, default=0)
    if not counts or top <= 0:
        return ""
    w = width / len(counts)
    out = [f'<svg class="hist" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    if title:
        out.append(f"<title>{_x(title)}</title>")
    for i, c in enumerate(counts):
        if c > 0:
            h = max(1.0, c / top * height)
            out.append(f'<rect x="{i * w:.2f}" y="{height - h:.2f}" width="{max(w - 0.5, 0.5):.2f}" height="{h:.2f}" '
                       f'fill="{color}"/>')
    out.append("</svg>")
    return "".join(out)
