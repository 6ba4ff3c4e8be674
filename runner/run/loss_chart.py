"""The report's loss chart as inline SVG: every step trained (bucket means only past MAX_CURVE_POINTS), axis titles,
ticks on round numbers printed with one precision per axis, and a dot per step when there are few enough to see
them. No plotting library: the report is one self-contained HTML file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_CURVE_POINTS = 400  # enough for a 640-px-wide plot; keeps the HTML small for 10k-step runs
DOTS_UP_TO = 120  # below this many points each step gets a dot (82 steps: 82 dots)


@dataclass(frozen=True)
class LossPoint:
    step: int
    loss: float


def downsample(points: Sequence[LossPoint], limit: int = MAX_CURVE_POINTS) -> list[LossPoint]:
    """Bucket means: keeps the curve's shape (a stride would keep noise spikes at random)."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / limit)
    out = []
    for i in range(0, len(points), size):
        bucket = points[i : i + size]
        out.append(LossPoint(bucket[-1].step, sum(p.loss for p in bucket) / len(bucket)))
    return out


def nice_ticks(lo: float, hi: float, target: int = 5, integer: bool = False) -> tuple[list[float], int]:
    """Round tick values inside [lo, hi] (a step of 1, 2, 2.5 or 5 × 10^k) and the decimals that print every
    one of them alike (0.050, 0.100, 0.150 — never 0.05, 0.1, 0.15)."""
    span = max(hi - lo, 1e-12)
    raw = span / max(1, target - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    mantissa = next(m for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    step = mantissa * magnitude
    if integer:
        step, magnitude, mantissa = max(1, round(step)), 1, 1
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    ticks = [round(k * step, 12) for k in range(first, last + 1)]
    decimals = 0 if integer else max(0, -math.floor(math.log10(step) + 1e-9) + (1 if mantissa == 2.5 else 0))
    return ticks, decimals


def loss_svg(points: Sequence[LossPoint], width: int = 640, height: int = 260) -> str:
    if len(points) < 2:
        return '<p class="muted">Not enough steps for a loss curve.</p>'
    pts = downsample(points)
    left, right, top, bottom = 64, 14, 12, 44
    x0, x1 = pts[0].step, pts[-1].step
    lo, hi = min(p.loss for p in pts), max(p.loss for p in pts)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(step: float) -> float:
        return left + (step - x0) / max(1, x1 - x0) * plot_w

    def y(loss: float) -> float:
        return top + (hi - loss) / (hi - lo) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="training loss at each optimizer step">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>',
    ]
    y_ticks, y_decimals = nice_ticks(lo, hi)
    for value in y_ticks:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eee"/>'
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.{y_decimals}f}</text>'
        )
    x_ticks, _ = nice_ticks(x0, x1, integer=True)
    for step in x_ticks:
        parts.append(
            f'<line x1="{x(step):.1f}" x2="{x(step):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#999"/>'
            f'<text x="{x(step):.1f}" y="{top + plot_h + 17}" text-anchor="middle">{int(step)}</text>'
        )
    parts.append(
        f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">optimizer step</text>'
        f'<text class="axis" x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">training loss</text>'
    )
    path = " ".join(f"{x(p.step):.1f},{y(p.loss):.1f}" for p in pts)
    parts.append(f'<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="{path}"/>')
    if len(pts) <= DOTS_UP_TO:
        parts += [f'<circle cx="{x(p.step):.1f}" cy="{y(p.loss):.1f}" r="2" fill="#2563eb"/>' for p in pts]
    parts.append("</svg>")
    return "".join(parts)
