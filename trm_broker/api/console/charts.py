"""Bar charts drawn by the server as inline SVG (issue 20): no external service and no script.

This module only computes the geometry, from the figures a table shows; the template
``_chart.html`` draws it with a title and a description for screen readers, and the page
shows the same figures as a table right after it. A suppressed cell (``None``) draws no bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: The drawing's width and the left column for the row labels, in SVG user units.
WIDTH = 760
LABEL = 300
BAR = 18
GAP = 10
#: Series colours are CSS classes (console.css): s0 … s5, at least 3:1 against white.
SERIES = 6


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    series: int
    value: float


@dataclass(frozen=True)
class Row:
    label: str
    y: float
    middle: float
    segments: tuple[Segment, ...]
    #: The figures written at the end of the bars: (x, y of the text's middle, value); a
    #: stacked bar's total, or each thin bar's value.
    notes: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class BarChart:
    rows: tuple[Row, ...]
    series: tuple[str, ...]
    height: float
    width: int
    #: The value at the right end of the scale, and where its ticks fall.
    scale_max: float
    ticks: tuple[tuple[float, float], ...]
    axis_y: float

    @property
    def label_x(self) -> int:
        """Where the row labels end, right-aligned before the bars."""
        return LABEL - 8


def _nice(top: float) -> float:
    """A round number at or above ``top``: 1, 2 or 5 times a power of ten."""
    if top <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(top))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= top))


def bar_chart(
    rows: Sequence[tuple[str, Sequence[float | None]]],
    series: Sequence[str],
    *,
    stacked: bool,
) -> BarChart:
    """Horizontal bars, one row per label: its values stacked in one bar (``stacked``), or
    side by side as one thinner bar per series."""
    plot = WIDTH - LABEL - 60
    if stacked:
        top = max((sum(v for v in values if v) for _, values in rows), default=0.0)
    else:
        top = max((v for _, values in rows for v in values if v), default=0.0)
    scale_max = _nice(top)
    per_row = BAR if stacked else BAR * max(1, len(series)) * 2 / 3
    drawn: list[Row] = []
    y = float(GAP)
    for label, values in rows:
        segments: list[Segment] = []
        x = float(LABEL)
        thin = per_row / max(1, len(series))
        for number, value in enumerate(values):
            if not value:
                continue
            width = plot * value / scale_max
            if stacked:
                segments.append(Segment(x, y, width, per_row, number % SERIES, value))
                x += width
            else:
                top_y = y + number * thin
                segments.append(Segment(LABEL, top_y, width, thin, number % SERIES, value))
                x = max(x, LABEL + width)
        if stacked:
            known = [v for v in values if v is not None]
            notes = [(x + 4, y + per_row / 2, sum(known))] if known else []
        else:
            notes = [(s.x + s.width + 4, s.y + s.height / 2, s.value) for s in segments]
        drawn.append(Row(label, y, y + per_row / 2, tuple(segments), tuple(notes)))
        y += per_row + GAP
    # Fifths of the scale (whole numbers but for 1 and 2: then each unit).
    parts = round(scale_max) if scale_max in (1, 2) else 5
    ticks = tuple((LABEL + plot * i / parts, scale_max * i / parts) for i in range(parts + 1))
    return BarChart(tuple(drawn), tuple(series), y + 24, WIDTH, scale_max, ticks, y)
