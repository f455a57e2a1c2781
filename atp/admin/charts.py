"""Server-rendered SVG charts for the dashboard: axes, gridlines, legends; no JavaScript.

Scales:
- throughput (tasks ended per minute) uses a square-root y axis with 1-2-5 ticks, so one
  burst of thousands does not flatten every later minute of tens into a hairline;
- queue depth uses a linear axis with "nice" 1-2-5 ticks;
- run times span milliseconds to hours, so their axis is logarithmic (powers of ten).
"""

import math

from django.utils.html import format_html, format_html_join

from atp.admin import display
from atp.admin.display import STATUS_COLOURS
from atp.models import Status

WIDTH = 900
LEFT, RIGHT, TOP, BOTTOM = 56, 56, 28, 36
GRID = "#e5e5e5"
SERIES = (
    ("finished", Status.FINISHED, "finished"),
    ("failed", Status.FAILED, "failed"),
    ("revoked", Status.REVOKED, "revoked"),
)


def _fmt(template: str, *args) -> str:
    """``format_html`` with floats rounded to 0.1 px (format_html escapes args to text first)."""
    values = [f"{arg:.1f}" if isinstance(arg, float) else arg for arg in args]
    return format_html(template.replace("{:.1f}", "{}"), *values)


def _join(parts):
    """Concatenate already-escaped SVG fragments (each built by format_html)."""
    return format_html_join("", "{}", ((part,) for part in parts))


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10ⁿ that is ≥ ``value`` (1 for 0 or less)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Evenly spaced ticks 0 … ≥ ``top`` at a 1-2-5 step, about ``count`` of them."""
    step = nice_ceiling(top / count) if top > 0 else 1
    ticks, value = [], 0.0
    while value < top + step / 2:
        ticks.append(value)
        value += step
    return ticks


def sqrt_ticks(top: float, most: int = 7) -> list[float]:
    """0 and the 1-2-5 values up to ``top``, thinned to at most ``most`` (for a sqrt axis)."""
    values: list[float] = []
    power = 1
    while power <= top:
        values.extend(v for v in (power, 2 * power, 5 * power) if v <= top)
        power *= 10
    while len(values) + 1 > most:
        values = values[1::2] if len(values) % 2 == 0 else values[::2]
    return [0, *values]


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _svg(height: int, label: str, body) -> str:
    return format_html(
        '<svg class="atp-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'viewBox="0 0 {w} {h}" role="img" aria-label="{label}" font-family="sans-serif" '
        'font-size="11"><g fill="#444">{body}</g></svg>',
        w=WIDTH,
        h=height,
        label=label,
        body=body,
    )


def _legend(items, y: int) -> str:
    """Coloured swatches with labels in a row at the top right."""
    parts, x = [], WIDTH - RIGHT
    for text, colour, dashed in reversed(items):
        x -= 12 + 7 * len(text) + 16
        swatch = (
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2" '
                'stroke-dasharray="4 2"/>',
                x,
                y - 4,
                x + 12,
                y - 4,
                colour,
            )
            if dashed
            else format_html(
                '<rect x="{}" y="{}" width="10" height="10" fill="{}"/>', x, y - 9, colour
            )
        )
        parts.append(format_html('{}<text x="{}" y="{}">{}</text>', swatch, x + 15, y, text))
    return format_html('<g class="atp-legend">{}</g>', _join(reversed(parts)))


def throughput_svg(buckets, height: int = 260) -> str:
    """Stacked bars of tasks ended per minute by outcome, on a square-root scale.

    Y ticks at 1-2-5 values with gridlines; x labels every 10 minutes; the dashed line is the
    failure rate (failed / ended) of each minute on the right-hand 0–100 % axis.
    """
    count = max(len(buckets), 1)
    peak = max([bucket.total for bucket in buckets] + [1])
    top = nice_ceiling(peak)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, height - TOP - BOTTOM
    base = TOP + plot_h
    step = plot_w / count

    def y_of(value: float) -> float:
        return base - plot_h * math.sqrt(value / top)

    grid = []
    for tick in sqrt_ticks(top):
        y = y_of(tick)
        grid.append(
            _fmt(
                '<line x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}" stroke="{}"/>'
                '<text x="{}" y="{:.1f}" text-anchor="end">{}</text>',
                LEFT,
                y,
                WIDTH - RIGHT,
                y,
                GRID,
                LEFT - 6,
                y + 4,
                _number(tick),
            )
        )
    for share in (0, 50, 100):
        y = base - plot_h * share / 100
        grid.append(
            _fmt(
                '<text x="{}" y="{:.1f}">{}%</text>',
                WIDTH - RIGHT + 6,
                y + 4,
                share,
            )
        )
    bars, points, labels = [], [], []
    for i, bucket in enumerate(buckets):
        x = LEFT + i * step
        stacked = 0
        for name, status, label in SERIES:
            value = getattr(bucket, name)
            if not value:
                continue
            y_top, y_bottom = y_of(stacked + value), y_of(stacked)
            stacked += value
            bars.append(
                _fmt(
                    '<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}">'
                    "<title>{} {}: {}</title></rect>",
                    x + 0.5,
                    y_top,
                    max(step - 1, 1),
                    max(y_bottom - y_top, 0.5),
                    STATUS_COLOURS[status],
                    f"{bucket.start:%H:%M}",
                    label,
                    value,
                )
            )
        if bucket.total:
            rate = bucket.failed / bucket.total
            points.append(f"{x + step / 2:.1f},{base - plot_h * rate:.1f}")
        if bucket.start.minute % 10 == 0:
            labels.append(
                _fmt(
                    '<line x1="{:.1f}" y1="{}" x2="{:.1f}" y2="{}" stroke="#999"/>'
                    '<text x="{:.1f}" y="{}" text-anchor="middle">{}</text>',
                    x,
                    base,
                    x,
                    base + 4,
                    x,
                    base + 16,
                    display.moment(bucket.start)[-8:-3],
                )
            )
    line = (
        format_html(
            '<polyline class="atp-failure-rate" points="{}" fill="none" stroke="#000" '
            'stroke-width="1.5" stroke-dasharray="4 2"/>',
            " ".join(points),
        )
        if points
        else ""
    )
    legend = _legend(
        [
            *((label, STATUS_COLOURS[status], False) for _, status, label in SERIES),
            ("failure rate", "#000", True),
        ],
        14,
    )
    body = format_html(
        '{grid}<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#999"/>'
        '<text x="{l}" y="14">tasks ended per minute (√ scale)</text>'
        '<text x="{l}" y="{xl}">UTC time, last hour</text>'
        "{bars}{line}{labels}{legend}",
        grid=_join(grid),
        l=LEFT,
        r=WIDTH - RIGHT,
        t=TOP,
        b=base,
        xl=height - 4,
        bars=_join(bars),
        line=line,
        labels=_join(labels),
        legend=legend,
    )
    return _svg(height, "Tasks ended per minute by outcome, last hour", body)


def _hbars(rows, axis_ticks, x_of, title: str, label: str) -> str:
    """Horizontal bar rows (name, [(from, to, colour, tooltip)], note) over a tick axis."""
    row_h = 24
    height = TOP + row_h * max(len(rows), 1) + BOTTOM
    base = TOP + row_h * max(len(rows), 1)
    left = 200
    parts = []
    for tick, text in axis_ticks:
        x = x_of(tick)
        parts.append(
            _fmt(
                '<line x1="{:.1f}" y1="{}" x2="{:.1f}" y2="{}" stroke="{}"/>'
                '<text x="{:.1f}" y="{}" text-anchor="middle">{}</text>',
                x,
                TOP,
                x,
                base,
                GRID,
                x,
                base + 14,
                text,
            )
        )
    for i, (name, segments, note) in enumerate(rows):
        y = TOP + i * row_h
        parts.append(
            format_html(
                '<text x="{}" y="{}" text-anchor="end">{}</text>',
                left - 8,
                y + 16,
                name[:30],
            )
        )
        end = x_of(0)
        for start, stop, colour, tip in segments:
            x0, x1 = x_of(start), x_of(stop)
            end = max(end, x1)
            parts.append(
                _fmt(
                    '<rect x="{:.1f}" y="{}" width="{:.1f}" height="14" fill="{}">'
                    "<title>{}</title></rect>",
                    x0,
                    y + 5,
                    max(x1 - x0, 1),
                    colour,
                    tip,
                )
            )
        parts.append(_fmt('<text x="{:.1f}" y="{}">{}</text>', end + 6, y + 16, note))
    if not rows:
        parts.append(format_html('<text x="{}" y="{}">nothing to show</text>', left, TOP + 16))
    body = format_html(
        '<text x="{}" y="14">{}</text>{}<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>',
        left,
        title,
        _join(parts),
        left,
        TOP,
        left,
        base,
    )
    return _svg(height, label, body)


def queue_svg(depths, now) -> str:
    """Due tasks waiting per queue (linear, 1-2-5 ticks), labelled with the oldest due age."""
    top = nice_ceiling(max([depth.due for depth in depths] + [1]))
    ticks = nice_ticks(top)
    top = ticks[-1]
    left, right = 200, WIDTH - 320

    def x_of(value):
        return left + (right - left) * value / top

    rows = []
    for depth in depths:
        note = f"{depth.due} due"
        if depth.oldest_due is not None:
            note += f", oldest due {display.ago(depth.oldest_due, now)}"
        if depth.ahead:
            note += f"; {depth.ahead} scheduled ahead"
        rows.append((depth.queue, [(0, depth.due, STATUS_COLOURS[Status.ACCEPTED], note)], note))
    return _hbars(
        rows,
        [(tick, _number(tick)) for tick in ticks],
        x_of,
        "due tasks waiting per queue",
        "Due tasks waiting and the age of the oldest due task, per queue",
    )


def _seconds_label(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    if seconds <= 10_000:
        return f"{seconds:g} s"
    return f"{seconds / 3600:.3g} h"


def runtime_svg(runtimes) -> str:
    """p50 (bar) and p95 (lighter extension) run time per type, on a log-10 seconds axis."""
    low = 10 ** math.floor(math.log10(max(min([r.p50 for r in runtimes] + [1]), 0.001)))
    high = 10 ** math.ceil(math.log10(max([r.p95 for r in runtimes] + [1]) * 1.0001))
    left, right = 200, WIDTH - 320
    span = math.log10(high) - math.log10(low)

    def x_of(value):
        value = min(max(value, low), high)
        return left + (right - left) * (math.log10(value) - math.log10(low)) / span

    ticks = []
    value = low
    while value <= high * 1.0001:
        ticks.append((value, _seconds_label(value)))
        value *= 10
    rows = []
    for r in runtimes:
        note = f"p50 {display.duration(r.p50)}, p95 {display.duration(r.p95)} ({r.count} tasks)"
        rows.append(
            (
                r.type,
                [
                    (low, r.p50, "#007bff", f"p50 {display.duration(r.p50)}"),
                    (r.p50, r.p95, "#9ec5fe", f"p95 {display.duration(r.p95)}"),
                ],
                note,
            )
        )
    return _hbars(
        rows,
        ticks,
        x_of,
        "run time per type: p50 (dark) to p95 (light), log scale",
        "Run-time percentiles per task type",
    )


def queue_gauge_svg(depth: int, limit: int | None) -> str:
    """A horizontal bar: waiting tasks against the queue limit (full width when unlimited)."""
    width = 300
    share = 1.0 if not limit else min(depth / limit, 1.0)
    colour = "#dc3545" if limit and depth >= limit else "#e0a800" if share > 0.8 else "#28a745"
    return format_html(
        '<svg class="atp-gauge" xmlns="http://www.w3.org/2000/svg" width="{}" height="16">'
        '<rect width="{}" height="16" fill="#eee"/><rect width="{}" height="16" fill="{}"/>'
        "</svg>",
        width,
        width,
        f"{width * share if limit else 0:.1f}",
        colour,
    )
