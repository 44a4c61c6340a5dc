"""Charts as inline SVG, drawn on the server: no chart library, no script, CSP-clean.

Each chart is an `<svg role="img">` with a text description; series differ by dash pattern as
well as colour, and bars carry their value as text, so colour never carries meaning alone.
Pages show the numbers beside a chart too (a table), for screen readers and exact values.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from html import escape
from typing import Final

from markupsafe import Markup

COLOURS: Final = ("#0b57d0", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#57606a")
DASHES: Final = ("", "6 3", "2 3", "8 3 2 3", "1 2", "10 4")
"""Series are told apart by dash pattern too, not by colour alone."""

Point = tuple[float, float]
Formatter = Callable[[float], str]


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if magnitude >= 1_000:
        return f"{value / 1_000:.1f}k"
    if magnitude >= 10 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.3g}"


def _clock(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, tz=dt.UTC).strftime("%H:%M")


def line_chart(
    series: Sequence[tuple[str, Sequence[Point]]],
    *,
    title: str,
    width: int = 640,
    height: int = 200,
    y_format: Formatter = _number,
    x_format: Formatter = _clock,
) -> Markup:
    """Lines over time: `series` is (name, [(unix seconds, value), ...]) each."""
    pad_right, pad_top, pad_bottom = 12, 10, 38
    points = [p for _, values in series for p in values]
    if not points:
        return _empty(title, width, height)
    x_min = min(p[0] for p in points)
    x_max = max(p[0] for p in points)
    y_max = max(max(p[1] for p in points), 0.0)
    if y_max <= 0 or not math.isfinite(y_max):
        y_max = 1.0
    # Room for the longest axis label (about 6.5 px a character at 11 px).
    widest = max(len(y_format(y_max * f)) for f in (0.0, 0.5, 1.0))
    pad_left = max(36, min(width // 3, int(widest * 6.5) + 10))
    if x_max == x_min:
        x_max = x_min + 1.0
    plot_w = width - pad_left - pad_right
    plot_h = height - pad_top - pad_bottom

    def sx(x: float) -> float:
        return pad_left + (x - x_min) / (x_max - x_min) * plot_w

    def sy(y: float) -> float:
        return pad_top + plot_h - (y / y_max) * plot_h

    parts = [_open(title, width, height)]
    for fraction in (0.0, 0.5, 1.0):
        y = sy(y_max * fraction)
        parts.append(
            f'<line x1="{pad_left}" x2="{width - pad_right}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#d0d7de" stroke-width="1"/>'
            f'<text x="{pad_left - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(y_format(y_max * fraction))}</text>"
        )
    for x in (x_min, (x_min + x_max) / 2, x_max):
        parts.append(
            f'<text x="{sx(x):.1f}" y="{height - pad_bottom + 14}" text-anchor="middle">'
            f"{escape(x_format(x))}</text>"
        )
    for i, (name, values) in enumerate(series):
        colour, dash = COLOURS[i % len(COLOURS)], DASHES[i % len(DASHES)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(values))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if len(values) == 1:
            x, y = values[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"'
            f"{dash_attr}><title>{escape(name)}</title></polyline>"
        )
        legend_x = pad_left + i * 130
        parts.append(
            f'<line x1="{legend_x}" x2="{legend_x + 22}" y1="{height - 8}" y2="{height - 8}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
            f'<text x="{legend_x + 26}" y="{height - 4}">{escape(name[:18])}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    width: int = 640,
    value_format: Formatter = _number,
    limit: float | None = None,
) -> Markup:
    """Horizontal bars with their values as text; `limit` draws a budget line."""
    bar_h, gap, label_w, value_w = 18, 6, 150, 90
    height = max(1, len(items)) * (bar_h + gap) + 10
    if not items:
        return _empty(title, width, 60)
    top = max([v for _, v in items] + ([limit] if limit else []))
    top = top if top > 0 and math.isfinite(top) else 1.0
    plot_w = width - label_w - value_w
    parts = [_open(title, width, height)]
    for i, (label, value) in enumerate(items):
        y = 5 + i * (bar_h + gap)
        w = max(0.0, value) / top * plot_w
        colour = COLOURS[0] if limit is None or value < limit else COLOURS[1]
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{escape(label[:24])}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
            f"<title>{escape(label)}: {escape(value_format(value))}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{escape(value_format(value))}</text>'
        )
    if limit:
        x = label_w + limit / top * plot_w
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" stroke="#9a6700" '
            'stroke-width="2" stroke-dasharray="4 3"><title>budget</title></line>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _open(title: str, width: int, height: int) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
    )


def _empty(title: str, width: int, height: int) -> Markup:
    return Markup(
        _open(title, width, height)
        + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">No data yet</text></svg>'
    )
