"""A daily bar chart as SVG geometry, drawn on the server (no chart library in the browser). Pure."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT, GAP = 600, 160, 2


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # what a screen reader and the tooltip say


def daily_bars(days: list[tuple[str, float]], unit: str = "") -> list[Bar]:
    """One bar per (date, value), scaled so the largest fills the height."""
    if not days:
        return []
    top = max(value for _, value in days) or 1.0
    width = WIDTH / len(days)
    bars = []
    for i, (day, value) in enumerate(days):
        height = HEIGHT * value / top
        label = f"{day}: {value:g}{unit}"
        bars.append(Bar(x=i * width, y=HEIGHT - height, width=max(width - GAP, 1), height=height, label=label))
    return bars
