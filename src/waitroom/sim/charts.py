"""Charts as SVG text: line charts and a scatter, drawn here so that a report needs nothing at run
time and carries no external asset. Colours come from CSS classes (report.py's style sheet), so
one chart reads in the light and the dark scheme alike."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 30, 40
MAX_COLUMNS = 1_000
"""A series keeps at most this many points: the least and the most of each pixel column."""


@dataclass(frozen=True)
class Line:
    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    style: str = "c1"
    """CSS class: c1..c4 (colours), `dashed` added for the compared config."""
    dashed: bool = False
    step: bool = False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def fmt(value: float) -> str:
    if value != value:  # nan
        return "–"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.1f}"


def thin(
    xs: Sequence[float], ys: Sequence[float | None], columns: int = MAX_COLUMNS
) -> list[tuple[float, float]]:
    """At most `2 × columns` points: in each column of x, its first, least and most (in order)."""
    points = [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None and math.isfinite(y)]
    if len(points) <= 2 * columns:
        return points
    low, high = points[0][0], points[-1][0]
    width = (high - low) / columns or 1.0
    out: list[tuple[float, float]] = []
    bucket: list[tuple[float, float]] = []
    current = 0
    for point in points:
        column = min(columns - 1, int((point[0] - low) / width))
        if column != current and bucket:
            out.extend(_extremes(bucket))
            bucket = []
        current = column
        bucket.append(point)
    out.extend(_extremes(bucket))
    return out


def _extremes(bucket: list[tuple[float, float]]) -> list[tuple[float, float]]:
    least = min(bucket, key=lambda p: p[1])
    most = max(bucket, key=lambda p: p[1])
    return sorted({least, most}, key=lambda p: p[0])


class Frame:
    def __init__(self, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.xticks = nice_ticks(*x_range)
        self.yticks = nice_ticks(0.0 if y_range[0] >= 0 else y_range[0], y_range[1])
        self.x0, self.x1 = self.xticks[0], self.xticks[-1]
        self.y0, self.y1 = self.yticks[0], self.yticks[-1]

    def x(self, value: float) -> float:
        return LEFT + (value - self.x0) / ((self.x1 - self.x0) or 1) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        return HEIGHT - BOTTOM - (value - self.y0) / ((self.y1 - self.y0) or 1) * (HEIGHT - TOP - BOTTOM)


def _axes(frame: Frame, x_label: str, y_label: str) -> list[str]:
    out = ['<g class="axes">']
    for t in frame.yticks:
        y = frame.y(t)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    for t in frame.xticks:
        x = frame.x(t)
        out.append(
            f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" '
            f'y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 4}"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{fmt(t)}</text>')
    out.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM}"/>'
    )
    out.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>')
    out.append(
        f'<text class="label" x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
    )
    out.append(
        f'<text class="label" x="14" y="{(TOP + HEIGHT - BOTTOM) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + HEIGHT - BOTTOM) / 2:.0f})">{html.escape(y_label)}</text>'
    )
    out.append("</g>")
    return out


def _legend(entries: Sequence[tuple[str, str, bool]]) -> list[str]:
    out, x = ['<g class="legend">'], LEFT + 8
    for label, style, dashed in entries:
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        out.append(f'<line class="{style}" x1="{x}" x2="{x + 18}" y1="10" y2="10"{dash}/>')
        out.append(f'<text x="{x + 22}" y="14">{html.escape(label)}</text>')
        x += 30 + 7 * len(label)
    out.append("</g>")
    return out


def _svg(title: str, body: list[str]) -> str:
    return (
        f'<svg role="img" aria-label="{html.escape(title)}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">'
        f"<title>{html.escape(title)}</title>" + "".join(body) + "</svg>"
    )


def line_chart(
    title: str,
    x_label: str,
    y_label: str,
    lines: Sequence[Line],
    *,
    marks: Sequence[tuple[float, str]] = (),
    y_min: float = 0.0,
) -> str:
    """Lines over a shared x axis; `marks`: horizontal reference lines (a limit, a cap)."""
    thinned = [(line, thin(line.xs, line.ys)) for line in lines]
    xs = [x for _, points in thinned for x, _ in points] or [0.0, 1.0]
    ys = [y for _, points in thinned for _, y in points] + [value for value, _ in marks] or [0.0, 1.0]
    frame = Frame((min(xs), max(xs)), (min(y_min, min(ys)), max(max(ys), y_min + 1)))
    body = _axes(frame, x_label, y_label)
    for value, label in marks:
        y = frame.y(value)
        body.append(f'<line class="mark" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        body.append(
            f'<text class="mark-label" x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end">'
            f"{html.escape(label)}</text>"
        )
    for line, points in thinned:
        if not points:
            continue
        path = []
        for i, (x, y) in enumerate(points):
            px, py = frame.x(x), frame.y(y)
            if line.step and i:
                path.append(f"H{px:.1f}V{py:.1f}")
            else:
                path.append(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}")
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        body.append(f'<path class="series {line.style}" d="{"".join(path)}"{dash}/>')
        if len(points) <= 30 and not line.step:  # few points: each one shows
            dots = "".join(
                f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.5"/>' for x, y in points
            )
            body.append(f'<g class="dots {line.style}">{dots}</g>')
    body += _legend([(line.label, line.style, line.dashed) for line in lines])
    return _svg(title, body)


def scatter_chart(
    title: str,
    x_label: str,
    y_label: str,
    groups: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    *,
    diagonal: bool = True,
) -> str:
    """Points (at most MAX_POINTS per group, chosen by the caller); `diagonal`: the line y = x."""
    points = [p for _, _, group in groups for p in group] or [(0.0, 0.0)]
    top = max(max(x for x, _ in points), max(y for _, y in points), 1.0)
    frame = Frame((0.0, top), (0.0, top))
    body = _axes(frame, x_label, y_label)
    if diagonal:
        body.append(
            f'<line class="mark" x1="{frame.x(0):.1f}" y1="{frame.y(0):.1f}" '
            f'x2="{frame.x(frame.x1):.1f}" y2="{frame.y(frame.y1):.1f}"/>'
        )
    for _, style, group in groups:
        dots = "".join(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="1.8"/>' for x, y in group)
        body.append(f'<g class="dots {style}">{dots}</g>')
    body += _legend([(label, style, False) for label, style, _ in groups])
    return _svg(title, body)
