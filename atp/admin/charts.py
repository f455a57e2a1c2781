"""Server-rendered SVG charts for the dashboard: no JavaScript, no CDN, just markup."""

from django.utils.html import format_html, format_html_join

from atp.admin.display import STATUS_COLOURS
from atp.models import Status

WIDTH, HEIGHT, PAD = 720, 180, 30


def throughput_svg(buckets) -> str:
    """Stacked bars of tasks ended per minute (finished, failed, revoked) with a rate line.

    The line is the failure rate (failed / ended) of each minute, on the right-hand scale.
    """
    count = max(len(buckets), 1)
    peak = max([bucket.total for bucket in buckets] + [1])
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = plot_w / count
    bars = []
    points = []
    for i, bucket in enumerate(buckets):
        x = PAD + i * step
        base = HEIGHT - PAD
        for value, status in (
            (bucket.finished, Status.FINISHED),
            (bucket.failed, Status.FAILED),
            (bucket.revoked, Status.REVOKED),
        ):
            if value:
                height = plot_h * value / peak
                base -= height
                bars.append(
                    (
                        f"{x:.1f}",
                        f"{base:.1f}",
                        f"{max(step - 1, 1):.1f}",
                        f"{height:.1f}",
                        STATUS_COLOURS[status],
                        f"{bucket.start:%H:%M} {Status(status).label}: {value}",
                    )
                )
        if bucket.total:
            rate = bucket.failed / bucket.total
            points.append(f"{x + step / 2:.1f},{HEIGHT - PAD - plot_h * rate:.1f}")
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
        bars,
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
    first = buckets[0].start.strftime("%H:%M") if buckets else ""
    last = buckets[-1].start.strftime("%H:%M") if buckets else ""
    return format_html(
        '<svg class="atp-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'viewBox="0 0 {w} {h}" role="img" aria-label="Tasks ended per minute, last hour">'
        '<line x1="{p}" y1="{base}" x2="{right}" y2="{base}" stroke="#999"/>'
        '<line x1="{p}" y1="{p}" x2="{p}" y2="{base}" stroke="#999"/>'
        '<text x="2" y="{p}" font-size="10">{peak}/min</text>'
        '<text x="{right}" y="{p}" font-size="10" text-anchor="end">failure rate 100%</text>'
        '<text x="{p}" y="{label_y}" font-size="10">{first}</text>'
        '<text x="{right}" y="{label_y}" font-size="10" text-anchor="end">{last}</text>'
        "{rects}{line}</svg>",
        w=WIDTH,
        h=HEIGHT,
        p=PAD,
        base=HEIGHT - PAD,
        right=WIDTH - PAD,
        label_y=HEIGHT - 8,
        peak=peak,
        first=first,
        last=last,
        rects=rects,
        line=line,
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
