"""io.image_grid: a PNG grid of image samples (grey or RGB), one row per `columns` samples (Pillow only)."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from .common import WritesFile, atomic_write, path_with_suffix, resolve_output

PngPath = path_with_suffix(".png")
WHITE, INK = (255, 255, 255), (40, 40, 40)
MIN_SIDE = 512  # automatic scale: the picture's longer side reaches at least this many pixels


@node("io.image_grid")
class ImageGrid(WritesFile, Node):
    """Tile images (B, H, W) or (B, C, H, W), C in {1, 3}, with values in [low, high] into one PNG."""

    cacheable: ClassVar[bool] = False  # writing the file is the point

    path: PngPath = Field(description="output file; relative paths resolve against the run's out_dir")
    columns: int = Field(8, ge=1, description="images per row (e.g. the batch per class of a class sweep)")
    scale: int | None = Field(None, ge=1, le=64, description="pixels per image pixel (nearest-neighbour "
                                                              f"upscaling); None: the picture is at least {MIN_SIDE} px")
    low: float = Field(-1.0, description="value drawn black")
    high: float = Field(1.0, description="value drawn white")
    pad: int = Field(1, ge=0, le=16, description="grey gap between images, in image pixels")
    title: str | None = Field(None, description="a line of text above the grid (what was sampled, how)")

    def run(self, images: torch.Tensor, ctx: NodeContext) -> str:
        """Write the grid; returns its absolute path."""
        if not self.high > self.low:
            raise NodeError(f"'high' ({self.high}) must be greater than 'low' ({self.low})")
        mid = (self.low + self.high) / 2  # the gaps are mid-grey
        grid = tile(to_channels_last(images), self.columns, self.pad, mid)  # (rows*(H+pad)+pad, cols*(W+pad)+pad, C)
        image = with_title(to_picture(grid, self.low, self.high, picture_scale(grid, self.scale)), self.title)
        return str(atomic_write(resolve_output(self.path, ctx.out_dir), lambda f: image.save(f, format="PNG")))


def picture_scale(grid: torch.Tensor, scale: int | None) -> int:
    """`scale`, or (None) the smallest integer scale that makes the canvas (H, W, C) at least MIN_SIDE px."""
    return scale if scale is not None else max(1, min(64, math.ceil(MIN_SIDE / max(grid.shape[:2]))))


def to_picture(grid: torch.Tensor, low: float, high: float, scale: int) -> Image.Image:
    """A canvas (H, W, C) of values in [low, high] -> a greyscale or RGB image, upscaled `scale` times."""
    level = ((grid - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)  # (H, W, C)
    array = level.repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()  # (H*s, W*s, C)
    grey = array.shape[2] == 1
    return Image.fromarray(array[..., 0] if grey else array, "L" if grey else "RGB")


def to_channels_last(images: torch.Tensor, port: str = "images") -> torch.Tensor:
    """(B, H, W, C) float64 on CPU from (B, H, W) or (B, C, H, W) with C in {1, 3}."""
    x = images.detach().to("cpu", torch.float64)
    if x.ndim == 3:
        return x[..., None]  # (B, H, W, 1)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x.permute(0, 2, 3, 1)  # (B, H, W, C)
    raise NodeError(f"input '{port}' must have shape (B, H, W) or (B, C, H, W) with C 1 or 3; "
                    f"got {tuple(images.shape)}")


def tile(x: torch.Tensor, columns: int, pad: int, fill: float) -> torch.Tensor:
    """Images (B, H, W, C) laid out row-major on a canvas of value `fill`."""
    b, h, w, c = x.shape
    cols = min(columns, b)
    rows = math.ceil(b / cols)
    canvas = torch.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=x.dtype)
    for i in range(b):
        r, k = divmod(i, cols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = x[i]
    return canvas


def with_title(picture: Image.Image, title: str | None) -> Image.Image:
    """The picture under a white band holding `title`, centred (unchanged without a title)."""
    if not title:
        return picture
    font = ImageFont.load_default(size=max(10, min(24, picture.width // 30)))
    band = int(font.size * 1.8)
    out = Image.new("RGB", (max(picture.width, int(font.getlength(title)) + 12), picture.height + band), WHITE)
    out.paste(picture.convert("RGB"), ((out.width - picture.width) // 2, band))
    ImageDraw.Draw(out).text((out.width / 2, band / 2), title, fill=INK, font=font, anchor="mm")
    return out
