"""io.class_grid: a PNG with one row of images per batch (per class, per method), each row
optionally captioned on its left (Pillow only)."""
from __future__ import annotations

from typing import ClassVar

import torch
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from .common import WritesFile, atomic_write, path_with_suffix, resolve_output
from .image_grid import MIN_SIDE, picture_scale, tile, to_channels_last, to_picture, with_title

PngPath = path_with_suffix(".png")
WHITE, INK = (255, 255, 255), (40, 40, 40)


@node("io.class_grid")
class ClassGrid(WritesFile, Node):
    """Rows of images, one per input batch (B_i, H, W) or (B_i, C, H, W), with optional captions, in one PNG."""

    cacheable: ClassVar[bool] = False  # writing the file is the point

    path: PngPath = Field(description="output file; relative paths resolve against the run's out_dir")
    columns: int | None = Field(None, ge=1, description="images shown per row; None: the largest batch")
    captions: list[str] | None = Field(None, description="one label per row (class or method), drawn at its left")
    scale: int | None = Field(None, ge=1, le=64, description="pixels per image pixel (nearest-neighbour "
                                                              f"upscaling); None: the picture is at least {MIN_SIDE} px")
    low: float = Field(-1.0, description="value drawn black")
    high: float = Field(1.0, description="value drawn white")
    pad: int = Field(1, ge=0, le=16, description="grey gap between images, in image pixels")
    title: str | None = Field(None, description="a line of text above the grid (what was sampled, how)")

    def run(self, images: list[torch.Tensor], ctx: NodeContext) -> str:
        """Write the grid; returns its absolute path."""
        if not self.high > self.low:
            raise NodeError(f"'high' ({self.high}) must be greater than 'low' ({self.low})")
        if self.captions is not None and len(self.captions) != len(images):
            raise NodeError(f"parameter 'captions' has {len(self.captions)} entries but input 'images' has "
                            f"{len(images)} batches (rows); give one caption per linked batch")
        rows = [to_channels_last(x, f"images[{i}]") for i, x in enumerate(images)]  # (B_i, H, W, C) each
        cols = self.columns or max(r.shape[0] for r in rows)
        if cols == 0:
            raise NodeError("every batch linked to input 'images' is empty; link batches holding images")
        mid = (self.low + self.high) / 2  # gaps and missing images are mid-grey
        canvas = tile(torch.cat(padded_rows(rows, cols, mid)), cols, self.pad, mid)  # (R*(H+pad)+pad, ..., C)
        scale = picture_scale(canvas, self.scale)
        picture = to_picture(canvas, self.low, self.high, scale)
        if self.captions:
            picture = self.caption(picture, len(rows), scale)
        picture = with_title(picture, self.title)
        return str(atomic_write(resolve_output(self.path, ctx.out_dir), lambda f: picture.save(f, format="PNG")))

    def caption(self, picture: Image.Image, n_rows: int, scale: int) -> Image.Image:
        """The picture with a white margin on its left holding each row's caption, centred on the row."""
        row_px = (picture.height - self.pad * scale) / n_rows  # one image plus its gap
        font = ImageFont.load_default(size=max(8, min(int(row_px * 0.4), 32)))
        margin = int(max(font.getlength(c) for c in self.captions)) + 12
        out = Image.new("RGB", (picture.width + margin, picture.height), WHITE)
        out.paste(picture.convert("RGB"), (margin, 0))
        draw = ImageDraw.Draw(out)
        for i, text in enumerate(self.captions):
            y = self.pad * scale + (i + 0.5) * row_px - self.pad * scale / 2
            draw.text((margin - 6, y), text, fill=INK, font=font, anchor="rm")
        return out


def padded_rows(rows: list[torch.Tensor], cols: int, fill: float) -> list[torch.Tensor]:
    """Each batch (B_i, H, W, C) cut or padded with `fill` images to exactly `cols` images; all must match."""
    h, w, c = rows[0].shape[1:]
    out = []
    for i, r in enumerate(rows):
        if r.shape[1:] != (h, w, c):
            raise NodeError(f"input 'images[{i}]' holds images of shape {tuple(r.shape[1:3])} with {r.shape[3]} "
                            f"channels, but 'images[0]' has {(h, w)} with {c}; every row needs the same image shape")
        r = r[:cols]
        out.append(torch.cat([r, r.new_full((cols - r.shape[0], h, w, c), fill)]))  # (cols, H, W, C)
    return out
