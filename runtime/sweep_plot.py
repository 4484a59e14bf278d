"""sweep.png: each numeric output of a sweep against its first grid axis, one line per value of the
other axes (Pillow only; no plotting library)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

PANEL_W, PANEL_H, MARGIN = 360, 240, 44
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
BOOKKEEPING = ("computed", "side_effects", "wall_s")


def numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metrics_of(axes: list[Any], rows: list[dict[str, Any]]) -> list[str]:
    """Outputs that are a finite number in every row."""
    names = [k for k in rows[0] if k not in BOOKKEEPING and all(k != a.target for a in axes)]
    return [k for k in names if all(numeric(row.get(k)) for row in rows)]


def plot_sweep(axes: list[Any], rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Write the plot; None (no file) when no output is a number."""
    metrics = metrics_of(axes, rows)
    if not metrics:
        return None
    first, rest = axes[0], axes[1:]
    xs = list(first.values)
    # x positions: the values themselves when all are numbers, else their order
    pos = [float(x) for x in xs] if all(numeric(x) for x in xs) else [float(i) for i in range(len(xs))]
    series: dict[str, list[tuple[float, float]]] = {}
    for metric in metrics:
        for row in rows:
            name = ", ".join(f"{a.target}={json.dumps(row[a.target])}" for a in rest) or metric
            series.setdefault(f"{metric}\0{name}", []).append((pos[xs.index(row[first.target])], float(row[metric])))
    img = Image.new("RGB", (PANEL_W * len(metrics), PANEL_H + 16 * max(1, len(set(k.split("\0")[1] for k in series)))),
                    "white")
    draw = ImageDraw.Draw(img)
    for col, metric in enumerate(metrics):
        lines = {k.split("\0")[1]: v for k, v in series.items() if k.split("\0")[0] == metric}
        panel(draw, col * PANEL_W, metric, first.target, xs, pos, lines)
    legend = list(dict.fromkeys(k.split("\0")[1] for k in series))
    for i, name in enumerate(legend if rest else []):
        y = PANEL_H + 4 + 16 * i
        draw.line([(MARGIN, y + 6), (MARGIN + 20, y + 6)], fill=COLOURS[i % len(COLOURS)], width=3)
        draw.text((MARGIN + 26, y), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def panel(draw: ImageDraw.ImageDraw, left: int, metric: str, x_name: str, xs: list[Any], pos: list[float],
          lines: dict[str, list[tuple[float, float]]]) -> None:
    """One metric's axes, ticks and lines inside [left, left + PANEL_W)."""
    ys = [y for pts in lines.values() for _, y in pts]
    lo_x, hi_x = min(pos), max(pos)
    lo_y, hi_y = min(ys), max(ys)
    span_x, span_y = (hi_x - lo_x) or 1.0, (hi_y - lo_y) or max(abs(hi_y), 1.0)
    x0, x1, y0, y1 = left + MARGIN + 16, left + PANEL_W - 12, PANEL_H - MARGIN, 24

    def at(x: float, y: float) -> tuple[float, float]:
        return x0 + (x - lo_x) / span_x * (x1 - x0), y0 - (y - lo_y) / span_y * (y0 - y1)

    draw.text((left + MARGIN, 4), metric, fill="black")
    draw.rectangle([x0, y1, x1, y0], outline=(160, 160, 160))
    for x, p in zip(xs, pos):
        px, _ = at(p, lo_y)
        draw.line([(px, y0), (px, y0 + 4)], fill="black")
        draw.text((px - 8, y0 + 6), json.dumps(x)[:8], fill="black")
    for y in (lo_y, hi_y):
        _, py = at(lo_x, y)
        draw.text((left + 2, py - 6), f"{y:.3g}", fill="black")
    draw.text((x0, y0 + 22), x_name, fill=(90, 90, 90))
    for i, pts in enumerate(lines.values()):
        pts = sorted(pts)
        colour = COLOURS[i % len(COLOURS)]
        if len(pts) > 1:
            draw.line([at(*p) for p in pts], fill=colour, width=2)
        for p in pts:
            cx, cy = at(*p)
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
