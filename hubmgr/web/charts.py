"""Line charts as inline SVG, drawn on the server: no script, no CDN, nothing the
Content-Security-Policy blocks (no style attributes: colours and dashes come from classes in
hubmgr.css, which follow the light and dark themes). Each chart is an image with an accessible
name and a description; the page puts its data table beside it."""

from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 78, 16, 14, 30  # margins for the axis labels
GRID_LINES = 4


@dataclass
class Series:
    key: str  # attribute of each point
    label: str
    css: str  # "s1", "s2", "s3": colour and dash pattern in hubmgr.css


def _axis_top(highest, integer=False):
    """The top of the value axis: GRID_LINES steps of 1, 2, 2.5 or 5 times a power of ten
    (whole steps for counts), the first that reaches ``highest``."""
    power = 1
    while power * 10 * GRID_LINES <= highest:
        power *= 10
    for step in (1, 2, 2.5, 5, 10):
        if integer and power == 1 and step == 2.5:
            continue
        if step * power * GRID_LINES >= highest:
            return step * power * GRID_LINES
    return 10 * power * GRID_LINES


def line_chart(chart_id, title, points, series, fmt, integer=False):
    """An SVG line chart of ``points`` (objects with ``date`` and each series' attribute; a
    None value breaks its line), values formatted by ``fmt`` on the axis. With ``integer``
    (counts), the axis marks whole numbers."""
    values = [getattr(p, s.key) for p in points for s in series]
    top = _axis_top(max([v for v in values if v is not None] or [0]), integer)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = len(points)
    # Days are placed by date, so a day without figures leaves its gap.
    span = (points[-1].date - points[0].date).days if n else 0

    def x(i):
        if span == 0:
            return f"{LEFT + inner_w / 2:.1f}"
        return f"{LEFT + inner_w * (points[i].date - points[0].date).days / span:.1f}"

    def y(v):
        return f"{TOP + inner_h * (1 - v / top):.1f}"

    grid = []
    for k in range(GRID_LINES + 1):
        value = top * k / GRID_LINES
        grid.append(format_html(
            '<line x1="{}" x2="{}" y1="{}" y2="{}"/><text x="{}" y="{}" '
            'text-anchor="end" dominant-baseline="middle">{}</text>',
            LEFT, WIDTH - RIGHT, y(value), y(value), LEFT - 6, y(value), fmt(value)))
    labels = []
    for i in sorted({0, n // 2, n - 1} if n else set()):
        anchor = "start" if i == 0 and span else "end" if i == n - 1 and span else "middle"
        labels.append(format_html('<text x="{}" y="{}" text-anchor="{}">{}</text>', x(i),
                                  HEIGHT - 8, anchor, points[i].date.isoformat()))
    lines = []
    for s in series:
        path, pen_down = [], False
        for i, point in enumerate(points):
            value = getattr(point, s.key)
            if value is None:
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{x(i)},{y(value)}")
            pen_down = True
        if path:
            lines.append(format_html('<path class="line {}" d="{}"/>', s.css, " ".join(path)))
        if n and span == 0 and getattr(points[0], s.key) is not None:  # one day: a dot
            lines.append(format_html('<circle class="dot {}" cx="{}" cy="{}" r="4"/>',
                                     s.css, x(0), y(getattr(points[0], s.key))))
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-labelledby="{}-title" '
        'aria-describedby="{}-desc" focusable="false"><title id="{}-title">{}</title>'
        '<desc id="{}-desc">{}</desc><g class="grid">{}</g><g class="axis">{}</g>{}</svg>',
        WIDTH, HEIGHT, chart_id, chart_id, chart_id, title, chart_id,
        describe(points, series, fmt), mark_safe("".join(grid)), mark_safe("".join(labels)),
        mark_safe("".join(lines)))


def describe(points, series, fmt):
    """The chart in a sentence, for a screen reader (the table beside it has every value)."""
    if not points:
        return "No figures yet."
    first, last = points[0], points[-1]
    parts = []
    for s in series:
        a, b = getattr(first, s.key), getattr(last, s.key)
        if b is None:
            parts.append(f"{s.label}: unknown on {last.date.isoformat()}")
        elif len(points) == 1 or a is None:
            parts.append(f"{s.label}: {fmt(b)}")
        else:
            parts.append(f"{s.label}: from {fmt(a)} to {fmt(b)}")
    span = (first.date.isoformat() if len(points) == 1
            else f"{first.date.isoformat()} to {last.date.isoformat()}")
    return f"{span}. " + "; ".join(parts) + "."


def legend(series):
    return format_html('<ul class="legend">{}</ul>', format_html_join(
        "", '<li><span class="swatch {}" aria-hidden="true"></span>{}</li>',
        ((s.css, s.label) for s in series)))
