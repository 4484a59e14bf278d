"""Line charts as PNG (Pillow only): curves of (x, y) points on a log-x axis, labelled axes and a legend."""
from __future__ import annotations

import colorsys
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Curves = dict[str, list[tuple[float, float]]]


def line_chart(curves: Curves, path: Path, title: str, x_label: str, y_label: str,
               reference: tuple[str, float] | None = None, log_y: bool = False) -> None:
    """Curves on log10(x) against y (log10(y) with log_y); `reference` draws a labelled horizontal line."""
    if log_y:
        curves = {k: [(x, math.log10(y)) for x, y in v] for k, v in curves.items()}
        reference = None if reference is None else (reference[0], math.log10(reference[1]))
    w, h, left, top, right, bottom = 1200, 760, 90, 70, 380, 72
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=14)
    pts = [p for v in curves.values() for p in v]
    ys = [p[1] for p in pts] + ([reference[1]] if reference else [])
    x_lo, x_hi = math.log10(min(p[0] for p in pts)) - 0.05, math.log10(max(p[0] for p in pts)) + 0.05
    pad = 0.05 * (max(ys) - min(ys) or 1.0)
    y_lo, y_hi = min(ys) - pad, max(ys) + pad
    pw, ph = w - left - right, h - top - bottom

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (math.log10(x) - x_lo) / (x_hi - x_lo) * pw, top + (y_hi - y) / (y_hi - y_lo) * ph

    for k in range(6):
        y = y_lo + k * (y_hi - y_lo) / 5
        draw.line([(left, at(1, y)[1]), (left + pw, at(1, y)[1])], fill=(228, 228, 228))
        draw.text((left - 8, at(1, y)[1]), f"{10 ** y if log_y else y:.3g}", fill="black", font=font, anchor="rm")
    for e in range(math.floor(x_lo), math.ceil(x_hi) + 1):
        for m in (1, 2, 5):
            x = m * 10.0 ** e
            if x_lo <= math.log10(x) <= x_hi:
                px = at(x, y_lo)[0]
                draw.line([(px, top), (px, top + ph)], fill=(238, 238, 238))
                draw.text((px, top + ph + 8), f"{x:g}", fill="black", font=font, anchor="mt")
    draw.rectangle([left, top, left + pw, top + ph], outline="black")
    draw.text((left + pw / 2, h - 24), x_label, fill="black", font=font, anchor="mm")
    draw.text((left + pw / 2, 20), title, fill="black", font=font, anchor="mm")
    draw.text((12, top - 22), y_label + (" (log scale)" if log_y else ""), fill="black", font=font)
    legend_y = top
    if reference is not None:
        ry = at(1, reference[1])[1]
        draw.line([(left, ry), (left + pw, ry)], fill=(120, 120, 120), width=1)
        draw.text((left + pw + 20, legend_y + 8), f"--- {reference[0]}", fill=(90, 90, 90), font=font, anchor="lm")
        legend_y += 22
    for i, (label, points) in enumerate(curves.items()):
        color = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(i / max(len(curves), 1), 0.9, 0.85 - 0.3 * (i % 2)))
        xy = [at(x, y) for x, y in sorted(points)]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2)
        for px, py in xy:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        lx = left + pw + 20
        draw.line([(lx, legend_y + 8), (lx + 30, legend_y + 8)], fill=color, width=3)
        draw.text((lx + 38, legend_y + 8), label, fill="black", font=font, anchor="lm")
        legend_y += 22
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
