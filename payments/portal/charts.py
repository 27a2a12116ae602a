"""Server-rendered SVG charts for the overview (no JavaScript, no chart library).

A chart here is geometry computed from already aggregated numbers
(`payments.selectors.dashboard_for`); templates/portal/_chart.html draws it as
an SVG named by its title and a one-sentence summary, followed by the same
numbers as a table. The table is the chart's full text alternative.

Coordinates are in the SVG's own units (a 480-wide viewBox); the page scales
it, so the text size is chosen to stay legible at the usual half-page width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from payments.templatetags.portal import duration, money, percent

WIDTH, HEIGHT = 480, 210
LEFT, RIGHT, TOP, BOTTOM = 78, 16, 12, 30  # margins: room for the axis labels
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

Number = int | float | Decimal
Format = Callable[[Number], str]


@dataclass(frozen=True)
class Mark:
    """A column, a bar or a point, with what it shows (an SVG <title>, for pointer users)."""

    x: float
    y: float
    width: float
    height: float
    title: str
    label: str = ""  # bars: the category, written above the bar
    text: str = ""  # bars: the value, written after the bar

    @property
    def middle(self) -> float:
        return round(self.y + self.height / 2, 2)

    @property
    def above(self) -> float:
        return round(self.y - 6, 2)

    @property
    def after(self) -> float:
        return round(self.x + self.width + 8, 2)


@dataclass(frozen=True)
class Tick:
    position: float
    label: str
    anchor: str = "middle"  # SVG text-anchor: the last x label ends at the plot's edge


@dataclass(frozen=True)
class Chart:
    id: str
    kind: str  # columns | line | bars
    title: str
    summary: str
    columns: tuple[str, ...]  # the data table's headings
    rows: list[tuple[str, ...]]  # the data table
    marks: list[Mark] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # polyline points, one per unbroken run
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    right: int = WIDTH - RIGHT
    bottom: int = HEIGHT - BOTTOM

    @property
    def axis_x(self) -> int:
        """Where the y-axis labels end."""
        return self.left - 8

    @property
    def axis_y(self) -> int:
        """The baseline of the x-axis labels."""
        return self.bottom + 22


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


# Axis tops for durations whose halves read well (30 s, 1 min, 2 min, 5 min ...).
DURATION_TOPS = (60, 120, 240, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400, 172800)


def duration_ceiling(seconds: float) -> float:
    return float(next((top for top in DURATION_TOPS if seconds <= top), nice_ceiling(seconds)))


def _y_ticks(top_value: float, fmt: Format) -> list[Tick]:
    return [
        Tick(position=round(TOP + PLOT_H * (1 - fraction), 2), label=fmt(top_value * fraction))
        for fraction in (0, 0.5, 1)
    ]


def _x_ticks(labels: Sequence[str], centre: Callable[[int], float], every: int) -> list[Tick]:
    """Every `every`-th label, and the last one (ending at the edge, so it is never clipped)."""
    if not labels:
        return []
    last = len(labels) - 1
    shown = [i for i in range(last) if i % every == 0 and last - i > every // 2]
    ticks = [Tick(position=centre(i), label=labels[i]) for i in shown]
    return [
        *ticks,
        Tick(position=min(centre(last), WIDTH - RIGHT), label=labels[last], anchor="end"),
    ]


def columns(
    chart_id: str,
    *,
    title: str,
    summary: str,
    labels: Sequence[str],
    values: Sequence[Number],
    fmt: Format,
    tick_fmt: Format,
    columns_: tuple[str, str],
    tick_every: int = 7,
    whole: bool = False,
) -> Chart:
    """One column per label (a day), height proportional to its value.

    `whole`: the values are counts, so the axis stops at an even number (whole ticks).
    """
    top_value = nice_ceiling(float(max(values, default=0)))
    if whole:
        top_value = float(max(2, math.ceil(top_value / 2) * 2))
    slot = PLOT_W / max(len(values), 1)
    gap = min(2.0, slot * 0.2)
    marks = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = PLOT_H * float(value) / top_value
        marks.append(
            Mark(
                x=round(LEFT + i * slot + gap / 2, 2),
                y=round(TOP + PLOT_H - height, 2),
                width=round(slot - gap, 2),
                height=round(height, 2),
                title=f"{label}: {fmt(value)}",
            )
        )
    return Chart(
        id=chart_id,
        kind="columns",
        title=title,
        summary=summary,
        columns=columns_,
        rows=[(label, fmt(value)) for label, value in zip(labels, values, strict=True)],
        marks=marks,
        x_ticks=_x_ticks(labels, lambda i: round(LEFT + (i + 0.5) * slot, 2), tick_every),
        y_ticks=_y_ticks(top_value, tick_fmt),
    )


def line(
    chart_id: str,
    *,
    title: str,
    summary: str,
    labels: Sequence[str],
    values: Sequence[Number | None],
    fmt: Format,
    columns_: tuple[str, str],
    top_value: float,
    empty: str = "—",
    tick_every: int = 7,
) -> Chart:
    """A line through the values; a missing value (None) breaks the line, it is not a zero."""
    step = PLOT_W / max(len(values) - 1, 1)
    marks, runs, run = [], [], []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        if value is None:
            if run:
                runs.append(run)
            run = []
            continue
        x = round(LEFT + i * step, 2)
        y = round(TOP + PLOT_H * (1 - min(float(value), top_value) / top_value), 2)
        run.append(f"{x},{y}")
        marks.append(Mark(x=x, y=y, width=0, height=0, title=f"{label}: {fmt(value)}"))
    if run:
        runs.append(run)
    return Chart(
        id=chart_id,
        kind="line",
        title=title,
        summary=summary,
        columns=columns_,
        rows=[
            (label, fmt(value) if value is not None else empty)
            for label, value in zip(labels, values, strict=True)
        ],
        marks=marks,
        lines=[" ".join(points) for points in runs],
        x_ticks=_x_ticks(labels, lambda i: round(LEFT + i * step, 2), tick_every),
        y_ticks=_y_ticks(top_value, fmt),
    )


BAR_ROW, BAR_H, BAR_ROOM = 50, 18, 150  # a row: its label line, then the bar; room for the value


def bars(
    chart_id: str,
    *,
    title: str,
    summary: str,
    labels: Sequence[str],
    values: Sequence[Number],
    texts: Sequence[str],
    columns_: tuple[str, ...],
    rows: list[tuple[str, ...]],
) -> Chart:
    """Horizontal bars, each with its label above it and its value written after it."""
    top_value = float(max(values, default=0)) or 1.0
    room = WIDTH - BAR_ROOM
    marks = [
        Mark(
            x=0,
            y=TOP + 20 + i * BAR_ROW,
            width=round(max(room * float(value) / top_value, 2), 2),
            height=BAR_H,
            title=f"{label}: {text}",
            label=label,
            text=text,
        )
        for i, (label, value, text) in enumerate(zip(labels, values, texts, strict=True))
    ]
    height = TOP + max(len(marks), 1) * BAR_ROW
    return Chart(
        id=chart_id,
        kind="bars",
        title=title,
        summary=summary,
        columns=columns_,
        rows=rows,
        marks=marks,
        height=height,
        left=0,
        bottom=height,
    )


# --- The overview's charts --------------------------------------------------------------


def _day(d) -> str:
    return f"{d.day} {d:%b}"


def _highest(labels, values, fmt) -> str:
    known = [(v, label) for label, v in zip(labels, values, strict=True) if v is not None]
    if not known or not max(v for v, _ in known):
        return ""
    value, label = max(known, key=lambda pair: pair[0])
    return f" Highest {fmt(value)} on {label}."


def _money_tick(value) -> str:
    """Axis money: whole pounds once the axis is past £10 (less ink, same meaning)."""
    amount = Decimal(str(value))
    return f"£{amount:,.0f}" if amount >= 10 or amount == amount.to_integral() else money(amount)


def dashboard_charts(dashboard) -> list[Chart]:
    """Collected amount and count per day, collection speed, failure and refund rates, method mix."""
    daily = dashboard.daily
    labels = [_day(d.day) for d in daily]
    span = f"{labels[0]} to {labels[-1]}" if labels else ""
    collected = [d.collected for d in daily]
    paid = [d.paid for d in daily]
    speed = [d.median_seconds_to_capture for d in daily]
    failure = [d.failure_rate for d in daily]
    refund = [d.refund_rate for d in daily]
    whole = lambda v: f"{float(v):g}"  # noqa: E731 - a one-line formatter
    charts = [
        columns(
            "chart-collected",
            title="Collected per day",
            summary=f"{money(dashboard.collected)} collected from {span}."
            + _highest(labels, collected, money),
            labels=labels,
            values=collected,
            fmt=money,
            tick_fmt=_money_tick,
            columns_=("Day (UTC)", "Collected"),
        ),
        columns(
            "chart-paid",
            title="Payments collected per day",
            summary=f"{dashboard.paid} payment{'s' if dashboard.paid != 1 else ''} collected "
            f"from {span}." + _highest(labels, paid, whole),
            labels=labels,
            values=paid,
            fmt=whole,
            tick_fmt=whole,
            columns_=("Day (UTC)", "Payments collected"),
            whole=True,
        ),
        line(
            "chart-speed",
            title="Collection speed per day (median time to capture)",
            summary=(
                f"Median {duration(dashboard.median_seconds_to_capture)} over the period."
                + _highest(labels, speed, duration)
                if dashboard.median_seconds_to_capture is not None
                else "No payment was captured over the period."
            ),
            labels=labels,
            values=speed,
            fmt=duration,
            columns_=("Day (UTC)", "Median time to capture"),
            empty="no capture",
            top_value=duration_ceiling(max((s for s in speed if s is not None), default=0)),
        ),
        line(
            "chart-failure",
            title="Failure rate per day",
            summary=f"{percent(dashboard.failure_rate)} of finished attempts failed over the "
            "period." + _highest(labels, failure, percent),
            labels=labels,
            values=failure,
            fmt=percent,
            columns_=("Day (UTC)", "Failure rate"),
            empty="no finished attempt",
            top_value=1.0,
        ),
        line(
            "chart-refund",
            title="Refund rate per day",
            summary=f"{percent(dashboard.refund_rate)} of the amount collected was refunded "
            "over the period." + _highest(labels, refund, percent),
            labels=labels,
            values=refund,
            fmt=percent,
            columns_=("Day (UTC)", "Refund rate"),
            empty="nothing collected",
            top_value=1.0,
        ),
    ]
    mix = dashboard.method_mix
    charts.append(
        bars(
            "chart-mix",
            title="Method mix (amount collected)",
            summary=(
                "; ".join(f"{m.label} {percent(m.share)}" for m in mix) + "."
                if mix
                else "Nothing collected yet."
            ),
            labels=[m.label for m in mix],
            values=[m.total for m in mix],
            texts=[f"{money(m.total)} ({percent(m.share)})" for m in mix],
            columns_=("Method", "Payments", "Amount", "Share"),
            rows=[(m.label, str(m.count), money(m.total), percent(m.share)) for m in mix],
        )
    )
    return charts
