"""``/<db>/-/links/evaluation``: precision against threshold per model, as a table and an SVG chart.

The chart is drawn on the server as inline SVG (no JavaScript, no chart
library): one line per model, level and comparison, a point per threshold with
judged links.  Every text in it is escaped; model labels come from the data.
"""
from __future__ import annotations

from html import escape
from typing import Sequence

from markupsafe import Markup

from ..storage import judgements as store_judgements

#: line colours, chosen to stay apart for readers with the common colour-vision deficiencies
PALETTE = ("#7b2d26", "#1f77b4", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#555555")

WIDTH, HEIGHT = 640, 340
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 16, 44


def series_name(group: dict) -> str:
    return f"{group['model']} · {group['level']} · {group['comparison']}"


def chart_svg(report: dict) -> Markup:
    """Precision (y, 0..1) against threshold (x, the grid), one polyline per group; empty when nothing is judged."""
    thresholds: Sequence[float] = report["thresholds"]
    groups = [g for g in report["groups"] if g["judged"]]
    lo, hi = thresholds[0], thresholds[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - lo) / (hi - lo) * plot_w

    def y(p: float) -> float:
        return TOP + (1 - p) * plot_h

    parts = [
        f'<svg class="emb-chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" xmlns="http://www.w3.org/2000/svg">',
        "<title>Precision of judged links against similarity threshold</title>",
    ]
    for p in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(p):.1f}" y2="{y(p):.1f}" stroke="#e6e1d8"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(p) + 4:.1f}" text-anchor="end" font-size="11" fill="#6b665e">{p:.2f}</text>')
    for t in thresholds[::2]:
        parts.append(f'<text x="{x(t):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11" fill="#6b665e">{t:.2f}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#6b665e"/>')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{y(0):.1f}" stroke="#6b665e"/>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="12" fill="#1d1b18">similarity threshold</text>')
    parts.append(f'<text x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" font-size="12" fill="#1d1b18" transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">precision</text>')
    target = report.get("target_precision")
    if target:
        parts.append(
            f'<line class="emb-chart-target" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(target):.1f}" y2="{y(target):.1f}" '
            f'stroke="#6b665e" stroke-dasharray="4 4"/>'
        )
    for i, group in enumerate(groups):
        colour = PALETTE[i % len(PALETTE)]
        name = escape(series_name(group))
        points = [(row["threshold"], row["precision"], row["judged"]) for row in group["thresholds"] if row["precision"] is not None]
        parts.append(f'<g class="emb-chart-series" data-model="{escape(group["model"])}"><title>{name}</title>')
        if len(points) > 1:
            coords = " ".join(f"{x(t):.1f},{y(p):.1f}" for t, p, _ in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        for t, p, n in points:
            parts.append(
                f'<circle cx="{x(t):.1f}" cy="{y(p):.1f}" r="3" fill="{colour}">'
                f"<title>{name}: precision {p:.2f} at {t:.2f} ({n} judged)</title></circle>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def page_context(report: dict) -> dict:
    """The report plus what the template draws: the chart, series colours, percentages."""
    groups = report["groups"]
    legend = [
        {"name": series_name(g), "colour": PALETTE[i % len(PALETTE)]}
        for i, g in enumerate(x for x in groups if x["judged"])
    ]
    return {
        **report,
        "chart": chart_svg(report) if any(g["judged"] for g in groups) else None,
        "legend": legend,
        "labels": list(store_judgements.LABELS),
    }
