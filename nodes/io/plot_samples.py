"""io.plot_samples: a PNG of 2-D samples beside the exact density they should follow (Pillow only)."""
from __future__ import annotations

from typing import ClassVar

import torch
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Distribution
from .common import WritesFile, atomic_write, path_with_suffix, resolve_output

PngPath = path_with_suffix(".png")
Extent = tuple[float, float, float, float]  # (x_min, x_max, y_min, y_max)
# viridis at 0, 1/8, ..., 1 (van der Walt & Smith 2015): perceptually uniform, readable in grey
VIRIDIS = torch.tensor([[68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
                        [31, 158, 137], [53, 183, 121], [110, 206, 88], [253, 231, 37]], dtype=torch.float64)
WHITE, INK, FRAME, POINT = (255, 255, 255), (40, 40, 40), (150, 150, 150), (200, 30, 30)
SHADE = 110  # grey depth of the density behind the points: faint, so the points stay the figure
GRID_MAX = 256  # density evaluations per axis; upsampled bilinearly to the panel
REFERENCE_DRAWS = 4096  # exact draws that size the automatic extent


@node("io.plot_samples")
class PlotSamples(WritesFile, Node):
    """Scatter plot of 2-D samples; with `density`, beside a heatmap of the exact density exp(log_prob)."""

    cacheable: ClassVar[bool] = False  # writing the file is the point

    path: PngPath = Field(description="output file; relative paths resolve against the run's out_dir")
    size: int = Field(512, ge=64, le=8192, description="side of each square panel in pixels")
    max_points: int = Field(4096, ge=1, description="at most this many samples are drawn (evenly strided)")
    extent: Extent | None = Field(None, description="(x_min, x_max, y_min, y_max); None: fit samples and density")
    point_radius: float = Field(1.5, gt=0, le=64, description="dot radius in pixels")
    title: str | None = Field(None, description="a line of text above the panels")
    axes: tuple[str, str] = Field(("dim 0", "dim 1"), description="names of the horizontal and vertical axes")

    @field_validator("extent")
    @classmethod
    def _ordered(cls, v: Extent | None) -> Extent | None:
        if v is not None and not (v[0] < v[1] and v[2] < v[3]):
            raise PydanticCustomError("extent_order", "must be (x_min, x_max, y_min, y_max) with x_min < x_max "
                                      "and y_min < y_max")
        return v

    def run(self, samples: torch.Tensor, ctx: NodeContext, density: Distribution | None = None) -> str:
        if samples.ndim != 2 or samples.shape[1] != 2:
            raise NodeError(f"input 'samples' must be 2-D points of shape (N, 2), got shape {tuple(samples.shape)}; "
                            f"plot_samples draws 2-D data only")
        pts = samples.detach().to("cpu", torch.float64)  # (N, 2)
        ref = reference_points(density) if density is not None else None  # (R, 2)
        extent = self.extent or auto_extent(pts, ref)
        layout = Layout(self.size, self.title is not None)
        panels, scatter = [], Image.new("RGB", (layout.side,) * 2, WHITE)
        if density is not None:
            level = density_levels(density, extent, layout.side)  # (G, G) in [0, 1]
            panels.append((to_image(viridis(level), layout.side), "exact density"))
            scatter = to_image(grey(level), layout.side)
        panels.append((scatter, self.draw_points(scatter, pts, extent)))
        image = layout.compose(panels, extent, self.title, self.axes)
        return str(atomic_write(resolve_output(self.path, ctx.out_dir), lambda f: image.save(f, format="PNG")))

    def draw_points(self, panel: Image.Image, pts: torch.Tensor, extent: Extent) -> str:
        """Dot an evenly strided subset of `pts` (N, 2) onto `panel`; returns the panel's caption."""
        n, side = pts.shape[0], panel.width
        shown = pts[torch.linspace(0, n - 1, min(n, self.max_points)).round().long()]  # (K, 2)
        px = to_pixels(shown, extent, side)  # (K, 2)
        inside = torch.isfinite(px).all(dim=1) & (px >= 0).all(dim=1) & (px <= side).all(dim=1)  # (K,)
        draw, r = ImageDraw.Draw(panel), self.point_radius
        for x, y in px[inside].tolist():
            draw.ellipse((x - r, y - r, x + r, y + r), fill=POINT)
        off = int((~inside).sum())
        count = f"{shown.shape[0]} of {n} samples" if shown.shape[0] < n else f"{n} samples"
        return count + (f", {off} off-plot" if off else "")


def reference_points(density: Distribution) -> torch.Tensor:
    """Exact draws (R, 2) from `density` (fixed generator: the picture never depends on the run seed)."""
    ref = density.sample(REFERENCE_DRAWS, torch.Generator().manual_seed(0))
    if ref.ndim != 2 or ref.shape[1] != 2:
        raise NodeError(f"input 'density' must be a distribution over 2-D points, but it draws shape "
                        f"{tuple(ref.shape)}")
    return ref.to("cpu", torch.float64)  # (R, 2)


def auto_extent(pts: torch.Tensor, ref: torch.Tensor | None) -> Extent:
    """A square window around the central 99.8% of the samples and density draws, padded by 10%."""
    both = torch.cat([pts, ref]) if ref is not None else pts  # (N+R, 2)
    both = both[torch.isfinite(both).all(dim=1)]
    if both.shape[0] == 0:
        return (-1.0, 1.0, -1.0, 1.0)
    lo = torch.quantile(both, 0.001, dim=0)  # (2,)
    hi = torch.quantile(both, 0.999, dim=0)  # (2,)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.1, 1e-6)
    cx, cy = centre.tolist()
    return (cx - half, cx + half, cy - half, cy + half)


def to_pixels(pts: torch.Tensor, extent: Extent, side: int) -> torch.Tensor:
    """Data (K, 2) -> pixel coordinates (K, 2) in a side x side panel, y pointing up."""
    x0, x1, y0, y1 = extent
    return torch.stack([(pts[:, 0] - x0) / (x1 - x0) * side, (y1 - pts[:, 1]) / (y1 - y0) * side], dim=1)


def density_levels(density: Distribution, extent: Extent, side: int) -> torch.Tensor:
    """exp(log_prob) (G, G) on a grid of pixel centres (rows top to bottom), divided by its maximum."""
    g = min(side, GRID_MAX)
    x0, x1, y0, y1 = extent
    centres = (torch.arange(g, dtype=torch.float64) + 0.5) / g  # (G,)
    xs, ys = x0 + centres * (x1 - x0), y1 - centres * (y1 - y0)  # (G,), (G,) rows run top to bottom
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1).reshape(-1, 2)  # (G*G, 2) as (x, y)
    lp = torch.nan_to_num(density.log_prob(grid).detach().to("cpu", torch.float64), nan=-torch.inf)  # (G*G,)
    top = lp.max()
    level = torch.exp(lp - top) if torch.isfinite(top) else torch.zeros_like(lp)  # (G*G,) in [0, 1]
    return level.reshape(g, g)  # (G, G)


def to_image(rgb: torch.Tensor, side: int) -> Image.Image:
    """RGB (G, G, 3) uint8 -> a side x side image, upsampled bilinearly."""
    return Image.fromarray(rgb.numpy(), "RGB").resize((side, side), Image.Resampling.BILINEAR)


def viridis(level: torch.Tensor) -> torch.Tensor:
    """Levels (...) in [0, 1] -> RGB (..., 3) uint8, piecewise linear between the viridis stops."""
    pos = level.clamp(0, 1) * (len(VIRIDIS) - 1)  # (...)
    lo = pos.floor().long().clamp(max=len(VIRIDIS) - 2)  # (...)
    frac = (pos - lo)[..., None]  # (..., 1)
    return (VIRIDIS[lo] * (1 - frac) + VIRIDIS[lo + 1] * frac).round().to(torch.uint8)  # (..., 3)


def grey(level: torch.Tensor) -> torch.Tensor:
    """Levels (...) in [0, 1] -> light grey shading RGB (..., 3) uint8, white where the density is 0."""
    return (255 - SHADE * level.clamp(0, 1))[..., None].expand(*level.shape, 3).round().to(torch.uint8)


class Layout:
    """Square panels of `size` px side by side: caption above, extent labels on the axes, title on top."""

    def __init__(self, size: int, titled: bool):
        self.size, self.font_px = size, max(9, size // 42)
        self.pad = max(4, size // 12)
        self.text = self.pad >= self.font_px + 4  # too small a panel gets no labels
        self.top = self.pad + (self.font_px + 4 if titled and self.text else 0)
        self.side = size - self.top - self.pad
        self.left = (size - self.side) // 2
        self.font = ImageFont.load_default(size=self.font_px)

    def compose(self, panels: list[tuple[Image.Image, str]], extent: Extent, title: str | None,
                axes: tuple[str, str]) -> Image.Image:
        image = Image.new("RGB", (self.size * len(panels), self.size), WHITE)
        draw = ImageDraw.Draw(image)
        for i, (panel, caption) in enumerate(panels):
            x, y = i * self.size + self.left, self.top
            image.paste(panel, (x, y))
            draw.rectangle((x - 1, y - 1, x + self.side, y + self.side), outline=FRAME)
            if self.text:
                self.labels(draw, x, caption, extent, axes)
        if title and self.text:
            draw.text((image.width / 2, 2), title, fill=INK, font=self.font, anchor="ma")
        return image

    def labels(self, draw: ImageDraw.ImageDraw, x: int, caption: str, extent: Extent, axes: tuple[str, str]) -> None:
        y, s, f = self.top, self.side, self.font
        x0, x1, y0, y1 = (f"{v:.3g}" for v in extent)
        draw.text((x + s / 2, y - 3), caption, fill=INK, font=f, anchor="md")
        draw.text((x, y + s + 3), x0, fill=INK, font=f, anchor="la")
        draw.text((x + s, y + s + 3), x1, fill=INK, font=f, anchor="ra")
        draw.text((x - 4, y + s), y0, fill=INK, font=f, anchor="rd")
        draw.text((x - 4, y), y1, fill=INK, font=f, anchor="ra")
        draw.text((x + s / 2, y + s + 3), axes[0], fill=INK, font=f, anchor="ma")  # between the x extent labels
        draw.text((x - 4, y + s / 2), axes[1], fill=INK, font=f, anchor="rm")
