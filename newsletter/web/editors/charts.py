"""Charts drawn on the server: the geometry of an inline SVG (templates/pages/desk/_charts.html.j2).

No script and no CDN: the page carries the drawing. Right to left, as the desk reads: over days,
time runs from right to left (the oldest day at the right edge, where a line of Arabic begins,
the newest at the left), and a story's bar grows from the right. Coordinates are in the SVG's own
units (its viewBox); the page scales the drawing to the screen, a phone's 375 px included.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

WIDTH = 320
# Over days: the bars' area, then room for the value labels at the right and the day labels below.
PLOT_LEFT, PLOT_RIGHT = 4.0, 282.0
PLOT_TOP, PLOT_BOTTOM = 10.0, 100.0
DAY_CHART_HEIGHT = 124
BAR_SHARE = 0.7  # of each day's slot; the rest is the gap that keeps neighbours apart
# Per story: one row each, the place number at the right, the bar growing leftwards from it.
STORY_ROW = 30.0
STORY_BAR = 18.0
STORY_RIGHT = 290.0
STORY_LONGEST = 230.0  # room for the count written beyond the longest bar


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int


@dataclass(frozen=True)
class DayBar(Bar):
    day: dt.date


@dataclass(frozen=True)
class DayChart:
    """Bars over consecutive days (oldest first in `bars`, drawn right to left), on one scale."""

    bars: list[DayBar]
    highest: int  # the value at the top of the scale (0 when nothing rose)
    lowest: int  # at its bottom (0 when nothing fell)
    zero_y: float  # the baseline
    width: int = WIDTH
    height: int = DAY_CHART_HEIGHT
    top_y: float = PLOT_TOP
    bottom_y: float = PLOT_BOTTOM
    left_x: float = PLOT_LEFT
    right_x: float = PLOT_RIGHT


def day_chart(values: list[tuple[dt.date, int]]) -> DayChart:
    """A bar for each (day, value), oldest first as given: the first day at the right, the last at the left.

    Negative values (a day's net loss) hang below the baseline, on the same scale as the gains."""
    highest = max([0, *(v for _, v in values)])
    lowest = min([0, *(v for _, v in values)])
    span = (highest - lowest) or 1
    unit = (PLOT_BOTTOM - PLOT_TOP) / span
    zero_y = PLOT_TOP + highest * unit
    slot = (PLOT_RIGHT - PLOT_LEFT) / max(len(values), 1)
    width = max(slot * BAR_SHARE, 1.0)
    bars = []
    for n, (day, value) in enumerate(values):
        x = PLOT_RIGHT - (n + 1) * slot + (slot - width) / 2
        top = zero_y - value * unit if value > 0 else zero_y
        bars.append(DayBar(round(x, 2), round(top, 2), round(width, 2), round(abs(value) * unit, 2), value, day))
    return DayChart(bars, highest, lowest, round(zero_y, 2))


@dataclass(frozen=True)
class StoryBar(Bar):
    place: int
    row_y: float  # the row's middle, for its labels


@dataclass(frozen=True)
class StoryChart:
    bars: list[StoryBar]
    highest: int
    width: int = WIDTH
    right_x: float = STORY_RIGHT

    @property
    def height(self) -> int:
        return int(len(self.bars) * STORY_ROW + 8)


def story_chart(values: list[tuple[int, int]]) -> StoryChart:
    """A horizontal bar for each (place, value), the lead first at the top, growing from the right."""
    highest = max([0, *(v for _, v in values)])
    unit = STORY_LONGEST / (highest or 1)
    bars = []
    for n, (place, value) in enumerate(values):
        middle = 4 + n * STORY_ROW + STORY_ROW / 2
        width = round(value * unit, 2)
        bars.append(StoryBar(round(STORY_RIGHT - width, 2), round(middle - STORY_BAR / 2, 2), width, STORY_BAR,
                             value, place, round(middle, 2)))
    return StoryChart(bars, highest)
