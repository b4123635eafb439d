"""SVG charts drawn on the server: no script, no fonts or files fetched, so the dashboard
works offline and with scripts off.

Labels are logged text (model and feature names, user ids): every string goes through
markupsafe's `escape` as an element's text or a quoted attribute value, and element and
attribute names are only ever our own constants, so no logged string becomes markup. Text
and axes are drawn in `currentColor` and the palette is of mid-tone colours, so a chart
reads on the light and the dark page alike. Each bar has a `<title>`: the browser shows it
on hover, with the exact figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Mid-tone colours, told apart on white and on near-black (Tableau 10, less its grey).
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#e15759")
OTHER = "#bab0ac"  # what the listed series leave over
ERRORS = "#e15759"
WIDTH = 640
FONT = 11
CHAR_W = 6.6  # about the advance of one character at FONT px, for laying out labels


def _attr(name: str, value: object) -> str:
    return f' {name}="{escape(value)}"'


def element(tag: str, attrs: Mapping[str, object] | None = None, *children: object) -> Markup:
    """`<tag attr="…">children</tag>`: attribute values and text children are escaped;
    children that are Markup (elements made here) are kept as they are."""
    names = "".join(
        _attr(k.rstrip("_").replace("_", "-"), v) for k, v in (attrs or {}).items() if v is not None
    )
    body = Markup("").join(escape(c) for c in children)
    return Markup(f"<{tag}{names}>{body}</{tag}>")


def title(text: str) -> Markup:
    return element("title", None, text)


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def name(value: str | None) -> str:
    """How a group whose value is NULL is labelled."""
    return "(none)" if value is None else value


def _hit(x: float, top: float, width: float, height: float, said: str) -> Markup:
    """A day's whole column, transparent: what the pointer finds (its title says the day's
    figures) and, where the day opens a list, what it clicks."""
    return element(
        "rect",
        {"class": "hit", "x": _num(x), "y": _num(top), "width": _num(width), "height": _num(height),
         "fill": "transparent"},
        title(said),
    )  # fmt: skip


def _num(v: float) -> str:
    return f"{v:.1f}"


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0, then round steps (1, 2, 2.5 or 5 × 10ⁿ) up to the first at or above `top`."""
    if top <= 0 or not math.isfinite(top):
        top = 1.0
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 12) for i in range(n + 1)]


def _svg(height: float, label: str, *children: Markup, width: float = WIDTH) -> Markup:
    return element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": "chart",
            "viewBox": f"0 0 {_num(width)} {_num(height)}",
            "role": "img",
            "aria-label": label,
            "font-size": FONT,
            "font-family": "system-ui, sans-serif",
        },
        title(label),
        *children,
    )


def _text(x: float, y: float, text: str, anchor: str = "start", **attrs: object) -> Markup:
    return element(
        "text", {"x": _num(x), "y": _num(y), "text-anchor": anchor, "fill": "currentColor", **attrs}, text
    )


def legend(items: Sequence[tuple[str, str]], top: float, chars: int = 28) -> tuple[Markup, float]:
    """Swatches and names in rows across the width; returns the drawing and its height."""
    parts: list[Markup] = []
    x, y = 0.0, top
    for label, color in items:
        shown = clip(label, chars)
        width = 14 + len(shown) * CHAR_W + 14
        if x > 0 and x + width > WIDTH:
            x, y = 0.0, y + 16
        parts.append(
            element(
                "g",
                {"class": "legend-item"},
                title(label),
                element("rect", {"x": _num(x), "y": _num(y), "width": 10, "height": 10, "fill": color}),
                _text(x + 14, y + 9, shown),
            )
        )
        x += width
    height = (y - top + 16) if items else 0
    return Markup("").join(parts), height


@dataclass
class Series:
    name: str
    values: Sequence[float]
    color: str


def _y_axis(
    ticks: list[float],
    left: float,
    top: float,
    bottom: float,
    fmt: Callable[[float], str],
    right: float = WIDTH,
) -> Markup:
    parts = []
    for t in ticks:
        y = bottom - (bottom - top) * t / ticks[-1]
        parts.append(
            element(
                "line",
                {"x1": _num(left), "x2": _num(right), "y1": _num(y), "y2": _num(y), "stroke": "currentColor"},
            )
            if t == 0
            else element(
                "line",
                {
                    "x1": _num(left),
                    "x2": _num(right),
                    "y1": _num(y),
                    "y2": _num(y),
                    "stroke": "currentColor",
                    "stroke-opacity": ".15",
                },
            )
        )
        parts.append(_text(left - 4, y + 4, fmt(t), "end"))
    return Markup("").join(parts)


def _x_labels(labels: Sequence[str], left: float, step: float, y: float, count: int = 10) -> Markup:
    """Every k-th day as MM-DD, about `count` in all."""
    every = max(1, math.ceil(len(labels) / count))
    return Markup("").join(
        _text(left + step * (i + 0.5), y, label[5:] if len(label) == 10 else label, "middle")
        for i, label in enumerate(labels)
        if i % every == 0
    )


def stacked_bars(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    label: str,
    fmt: Callable[[float], str],
    tick: Callable[[float], str],
    hrefs: Sequence[str | None] | None = None,
    notes: Sequence[str] | None = None,
) -> Markup:
    """One bar per label (a day), stacked by series, biggest series at the bottom. A bar's
    column links to `hrefs[i]` and is titled with its total (and `notes[i]`)."""
    n = len(labels)
    items, legend_h = legend([(s.name, s.color) for s in series], 0)
    totals = [sum(s.values[i] for s in series) for i in range(n)]
    ticks = nice_ticks(max(totals, default=0))
    left, top = 64.0, legend_h + 10
    plot_h = 160.0
    bottom = top + plot_h
    step = (WIDTH - left) / max(n, 1)
    bar_w = max(1.0, step * 0.8)
    scale = plot_h / ticks[-1]
    columns: list[Markup] = []
    for i, day in enumerate(labels):
        x = left + step * i + (step - bar_w) / 2
        whole = f"{day}: {fmt(totals[i])}" + (f" · {notes[i]}" if notes else "")
        column = [_hit(left + step * i, top, step, plot_h, whole)]
        y = bottom
        for s in series:
            v = s.values[i]
            if v <= 0:
                continue
            h = v * scale
            y -= h
            columns_attrs = {
                "x": _num(x),
                "y": _num(y),
                "width": _num(bar_w),
                "height": _num(h),
                "fill": s.color,
            }
            column.append(element("rect", columns_attrs, title(f"{day} · {s.name}: {fmt(v)}")))
        group = Markup("").join(column)
        href = hrefs[i] if hrefs else None
        columns.append(element("a", {"href": href}, group) if href else element("g", None, group))
    return _svg(
        bottom + 20,
        label,
        items,
        _y_axis(ticks, left, top, bottom, tick),
        *columns,
        _x_labels(labels, left, step, bottom + 14),
    )


def bars_with_rate(
    labels: Sequence[str],
    calls: Sequence[int],
    errors: Sequence[int],
    *,
    label: str,
    hrefs: Sequence[str | None] | None = None,
) -> Markup:
    """Calls per day as bars (the failed part in red) and the error rate as a line on its
    own scale, at the right."""
    n = len(labels)
    rates = [e / c if c else None for c, e in zip(calls, errors, strict=True)]
    items, legend_h = legend(
        [("calls", PALETTE[0]), ("errors", ERRORS), ("error rate (right axis)", PALETTE[1])], 0
    )
    ticks = nice_ticks(max(calls, default=0))
    rate_ticks = nice_ticks(max((r for r in rates if r is not None), default=0.0) * 100 or 1.0)
    left, right, top = 64.0, 44.0, legend_h + 10
    plot_h = 160.0
    bottom = top + plot_h
    width = WIDTH - left - right
    step = width / max(n, 1)
    bar_w = max(1.0, step * 0.8)
    scale = plot_h / ticks[-1]
    parts: list[Markup] = [items]
    for t in ticks:
        y = bottom - plot_h * t / ticks[-1]
        line = {
            "x1": _num(left),
            "x2": _num(left + width),
            "y1": _num(y),
            "y2": _num(y),
            "stroke": "currentColor",
        }
        parts.append(element("line", line if t == 0 else {**line, "stroke-opacity": ".15"}))
        parts.append(_text(left - 4, y + 4, f"{t:,g}", "end"))
    for t in rate_ticks:
        y = bottom - plot_h * t / rate_ticks[-1]
        parts.append(_text(left + width + 4, y + 4, f"{t:g}%", "start"))
    points: list[tuple[float, float, str]] = []
    for i, day in enumerate(labels):
        x = left + step * i + (step - bar_w) / 2
        rate = rates[i]
        note = f"{day}: {calls[i]:,} calls, {errors[i]:,} errors" + (
            f" ({rate:.2%})" if rate is not None else ""
        )
        column = [
            element(
                "rect",
                {
                    "class": "hit",
                    "x": _num(left + step * i),
                    "y": _num(top),
                    "width": _num(step),
                    "height": _num(plot_h),
                    "fill": "transparent",
                },
                title(note),
            )
        ]
        ok = calls[i] - errors[i]
        y = bottom
        for value, color, what in ((ok, PALETTE[0], "succeeded"), (errors[i], ERRORS, "failed")):
            if value <= 0:
                continue
            h = value * scale
            y -= h
            rect = {"x": _num(x), "y": _num(y), "width": _num(bar_w), "height": _num(h), "fill": color}
            column.append(element("rect", rect, title(f"{day}: {value:,} {what} · {note.split(': ', 1)[1]}")))
        group = Markup("").join(column)
        href = hrefs[i] if hrefs else None
        parts.append(element("a", {"href": href}, group) if href else element("g", None, group))
        if rate is not None:
            points.append((left + step * (i + 0.5), bottom - plot_h * rate * 100 / rate_ticks[-1], note))
    if len(points) > 1:
        path = " ".join(f"{_num(x)},{_num(y)}" for x, y, _ in points)
        parts.append(
            element("polyline", {"points": path, "fill": "none", "stroke": PALETTE[1], "stroke-width": 1.5})
        )
    for x, y, note in points:
        parts.append(
            element("circle", {"cx": _num(x), "cy": _num(y), "r": 2.5, "fill": PALETTE[1]}, title(note))
        )
    parts.append(_x_labels(labels, left, step, bottom + 14))
    return _svg(bottom + 20, label, *parts)


@dataclass
class Row:
    """One line of a horizontal bar chart: a bar per series (None: no figure)."""

    label: str
    values: Sequence[float | None]
    href: str | None = None
    note: str = ""


def hbars(
    rows: Sequence[Row],
    *,
    label: str,
    fmt: Callable[[float], str],
    series: Sequence[str] = (),
    label_chars: int = 24,
    short: Callable[[float], str] | None = None,
) -> Markup:
    """Horizontal bars, one line per row, one bar per series within a line, all on one
    scale from 0; the figure written after each bar (`short`, else `fmt`), whole in its title."""
    short = short or fmt
    k = max((len(r.values) for r in rows), default=1)
    colors = PALETTE[: max(k, 1)]
    items, legend_h = (
        legend(list(zip(series, colors, strict=False)), 0) if len(series) > 1 else (Markup(""), 0)
    )
    left = label_chars * CHAR_W + 8
    value_w = 84.0
    bar_h, gap = 10.0, 2.0
    line_h = k * (bar_h + gap) + 6
    top = legend_h + 4 if legend_h else 2.0
    top_value = max((v for r in rows for v in r.values if v is not None), default=0.0)
    scale = (WIDTH - left - value_w) / (top_value or 1.0)
    parts: list[Markup] = [items]
    for i, r in enumerate(rows):
        y0 = top + i * line_h
        text = _text(left - 6, y0 + line_h / 2 + 1, clip(r.label, label_chars), "end")
        caption = element("g", None, title(r.label + (f" · {r.note}" if r.note else "")), text)
        parts.append(element("a", {"href": r.href}, caption) if r.href else caption)
        for j, v in enumerate(r.values):
            y = y0 + 3 + j * (bar_h + gap)
            what = f"{r.label}" + (f" · {series[j]}" if j < len(series) else "")
            if v is None:
                parts.append(_text(left, y + bar_h - 1, "n/a", **{"fill-opacity": ".6"}))
                continue
            w = max(v * scale, 0.5)
            rect = {"x": _num(left), "y": _num(y), "width": _num(w), "height": _num(bar_h), "fill": colors[j]}
            parts.append(
                element("rect", rect, title(f"{what}: {fmt(v)}" + (f" · {r.note}" if r.note else "")))
            )
            parts.append(_text(left + w + 4, y + bar_h - 1, short(v)))
    return _svg(top + len(rows) * line_h + 4, label, *parts)


def _small(width: float, height: float, label: str, *children: Markup) -> Markup:
    # Sized in pixels, not to its container: it sits in a table cell beside the figures.
    return element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": "spark",
            "width": _num(width),
            "height": _num(height),
            "viewBox": f"0 0 {_num(width)} {_num(height)}",
            "role": "img",
            "aria-label": label,
        },
        title(label),
        *children,
    )


def spark(
    values: Sequence[float | None],
    *,
    label: str,
    fmt: Callable[[float], str],
    labels: Sequence[str] | None = None,
    color: str = ERRORS,
) -> Markup:
    """A row of tiny bars (one per day, say) for a table cell, the highest full height; a
    zero, or no figure (None), is a faint stub, so that the days stay countable. Each bar is
    titled with its figure."""
    width, height, gap = max(len(values) * 4.0, 24.0), 18.0, 1.0
    step = width / max(len(values), 1)
    top = max((v for v in values if v is not None), default=0) or 1.0
    parts: list[Markup] = []
    for i, v in enumerate(values):
        shown = v is not None and v > 0
        h = max((v or 0.0) / top * height, 1.0)
        rect = {
            "x": _num(i * step),
            "y": _num(height - h),
            "width": _num(max(step - gap, 1.0)),
            "height": _num(h),
            "fill": color if shown else "currentColor",
            "fill-opacity": None if shown else ".2",
        }
        figure = "no figure" if v is None else fmt(v)
        what = f"{labels[i]}: {figure}" if labels else figure
        parts.append(element("rect", rect, title(what)))
    return _small(width, height, label, *parts)


def pair(before: float | None, after: float | None, *, label: str, fmt: Callable[[float], str]) -> Markup:
    """Two short bars on one scale from 0, before above after, for a table cell."""
    width, bar_h, gap = 120.0, 7.0, 2.0
    top = max(v for v in (before, after, 0.0) if v is not None) or 1.0
    parts: list[Markup] = []
    for i, (v, color, what) in enumerate(((before, OTHER, "before"), (after, PALETTE[0], "after"))):
        if v is None:
            continue
        rect = {
            "x": 0,
            "y": _num(i * (bar_h + gap)),
            "width": _num(max(max(v, 0.0) / top * width, 0.5)),
            "height": _num(bar_h),
            "fill": color,
        }
        parts.append(element("rect", rect, title(f"{what}: {fmt(v)}")))
    return _small(width, 2 * bar_h + gap, label, *parts)


# A chart of one figure per day, three in a row on a page: narrower than the others, so that
# its text stays legible when it is drawn a third of the width.
SMALL_WIDTH = 320.0
MARK_ROWS = 3  # rows of mark labels above the plot; marks past them share the last


@dataclass(frozen=True)
class Mark:
    """A day marked on a chart of days: a vertical line and a label above it."""

    index: int  # the day's place among the chart's labels
    label: str  # short: drawn, clipped
    about: str  # whole: its title
    color: str


def _mark_groups(marks: Sequence[Mark], n: int) -> list[tuple[int, str, str, str]]:
    """The marks by day, one label a day ("v2 +1"), each title naming them all."""
    by_day: dict[int, list[Mark]] = {}
    for m in marks:
        if 0 <= m.index < n:
            by_day.setdefault(m.index, []).append(m)
    return [
        (
            i,
            ms[0].label + (f" +{len(ms) - 1}" if len(ms) > 1 else ""),
            "; ".join(m.about for m in ms),
            ms[0].color,
        )
        for i, ms in sorted(by_day.items())
    ]


def days_line(
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    label: str,
    fmt: Callable[[float], str],
    tick: Callable[[float], str],
    marks: Sequence[Mark] = (),
    notes: Sequence[str] | None = None,
    hrefs: Sequence[str | None] | None = None,
    color: str = PALETTE[0],
) -> Markup:
    """One figure per day (a label) as a line, broken where a day has none (None), on a
    scale from 0; marked days as dashed vertical lines labelled above the plot. The column
    of a day with a figure is titled with it (and `notes[i]`) and links to `hrefs[i]`."""
    width, left, right = SMALL_WIDTH, 40.0, 8.0
    n = len(labels)
    step = (width - left - right) / max(n, 1)
    groups = _mark_groups(marks, n)
    # Each mark's label in the first row where it does not run into the one before it.
    row_ends = [-1.0] * MARK_ROWS
    placed: list[tuple[int, str, str, str, int]] = []
    for i, text, about, mark_color in groups:
        x = left + step * (i + 0.5)
        shown = clip(text, 16)
        row = next((r for r in range(MARK_ROWS) if row_ends[r] < x), MARK_ROWS - 1)
        row_ends[row] = x + 4 + len(shown) * CHAR_W
        placed.append((i, shown, about, mark_color, row))
    rows = 1 + max((p[4] for p in placed), default=-1)
    top = rows * 13.0 + 4
    plot_h = 90.0
    bottom = top + plot_h
    shown_values = [v for v in values if v is not None]
    ticks = nice_ticks(max(shown_values, default=0.0))
    parts: list[Markup] = [_y_axis(ticks, left, top, bottom, tick, right=width - right)]

    def y_of(v: float) -> float:
        return bottom - plot_h * max(v, 0.0) / ticks[-1]

    for i, day in enumerate(labels):
        v = values[i]
        if v is None:  # nothing to title or open (a month's view of a long period draws less)
            continue
        what = f"{day}: {fmt(v)}" + (f" · {notes[i]}" if notes else "")
        hit = _hit(left + step * i, top, step, plot_h, what)
        href = hrefs[i] if hrefs else None
        parts.append(element("a", {"href": href}, hit) if href else hit)
    for i, shown, about, mark_color, row in placed:
        x = left + step * (i + 0.5)
        y = row * 13.0 + 11
        line = {"x1": _num(x), "x2": _num(x), "y1": _num(y + 2), "y2": _num(bottom), "stroke": mark_color}
        anchor, tx = ("end", x - 3) if x + 4 + len(shown) * CHAR_W > width else ("start", x + 3)
        parts.append(
            element(
                "g",
                {"class": "mark"},
                title(about),
                element("line", {**line, "stroke-dasharray": "3 2", "stroke-width": 1.2}),
                _text(tx, y, shown, anchor, fill=mark_color),
            )
        )
    # The line, in runs of days that have a figure.
    run: list[tuple[float, float]] = []
    runs: list[list[tuple[float, float]]] = [run]
    for i, v in enumerate(values):
        if v is None:
            run = []
            runs.append(run)
        else:
            run.append((left + step * (i + 0.5), y_of(v)))
    for r in runs:
        if len(r) > 1:
            path = " ".join(f"{_num(x)},{_num(y)}" for x, y in r)
            parts.append(
                element("polyline", {"points": path, "fill": "none", "stroke": color, "stroke-width": 1.5})
            )
    # A dot a day while they stay apart (a day's column holds its title), and for a day
    # alone between two without a figure, which no line reaches.
    for i, v in enumerate(values):
        alone = all(not 0 <= j < n or values[j] is None for j in (i - 1, i + 1))
        if v is not None and (n <= 45 or alone):
            circle = {"cx": _num(left + step * (i + 0.5)), "cy": _num(y_of(v)), "r": 2.0, "fill": color}
            parts.append(element("circle", circle))
    if not shown_values:
        parts.append(_text(left + (width - left - right) / 2, top + plot_h / 2, "no figures", "middle"))
    parts.append(_x_labels(labels, left, step, bottom + 13, count=5))
    return _svg(bottom + 18, label, *parts, width=width)
