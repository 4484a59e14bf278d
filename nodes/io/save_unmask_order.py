"""io.save_unmask_order: a PNG strip of discrete-diffusion samples, one row per sample and one cell per
position showing its token, coloured by the step that revealed it (early dark blue, late yellow; the
order in which a sampler unmasked the sequence), positions given by the template grey (Pillow only)."""
from __future__ import annotations

from typing import ClassVar

import torch
from PIL import Image, ImageDraw, ImageFont
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..discrete.denoiser import DiscreteDenoiser
from ..discrete.samples import DiscreteSamples
from ..discrete.state import GIVEN, STILL_MASKED
from ..lm.vocab import text_of
from .common import WritesFile, atomic_write, path_with_suffix, resolve_output
from .image_grid import with_title

PngPath = path_with_suffix(".png")
GREY, MASKED = (190, 190, 190), (255, 255, 255)  # given by the template / never revealed (a sampler bug)
DARK, LIGHT = (20, 20, 20), (250, 250, 250)
RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))  # viridis anchors, early -> late


def step_colour(step: int, last: int) -> tuple[int, int, int]:
    """The colour of a position revealed at `step` (1..last): linear along RAMP from the first step to the last."""
    x = 0.0 if last <= 1 else (step - 1) / (last - 1) * (len(RAMP) - 1)
    k = min(int(x), len(RAMP) - 2)
    f = x - k
    return tuple(round(a + f * (b - a)) for a, b in zip(RAMP[k], RAMP[k + 1]))  # type: ignore[return-value]


def cell_colour(revealed: int, last: int) -> tuple[int, int, int]:
    """Background of a cell: grey if given, white if still masked, else its reveal step's colour."""
    if revealed == GIVEN:
        return GREY
    if revealed == STILL_MASKED:
        return MASKED
    return step_colour(revealed, last)


def ink_on(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Dark text on light cells, light text on dark ones (relative luminance)."""
    r, g, b = background
    return DARK if 0.299 * r + 0.587 * g + 0.114 * b > 128 else LIGHT


def strip(tokens: torch.Tensor, revealed: torch.Tensor, labels: list[str], cell: int) -> Image.Image:
    """The picture (N*cell high, L*cell wide) of tokens (N, L) with reveal steps (N, L); labels[id] is drawn."""
    n, length = tokens.shape
    last = max(int(revealed.max()), 1) if revealed.numel() else 1
    image = Image.new("RGB", (length * cell, n * cell), MASKED)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(6, int(cell * 0.75)))
    for i, (row, steps) in enumerate(zip(tokens.tolist(), revealed.tolist())):
        for j, (tok, step) in enumerate(zip(row, steps)):
            colour = cell_colour(step, last)
            draw.rectangle((j * cell, i * cell, (j + 1) * cell - 1, (i + 1) * cell - 1), fill=colour)
            if labels[tok]:
                draw.text((j * cell + cell / 2, i * cell + cell / 2), labels[tok], fill=ink_on(colour), font=font,
                          anchor="mm")
    return image


@node("io.save_unmask_order")
class SaveUnmaskOrder(WritesFile, Node):
    """A PNG strip of the order in which a discrete sampler revealed each position (one row per sample)."""

    cacheable: ClassVar[bool] = False  # writing the file is the point

    path: PngPath = Field(description="output file; relative paths resolve against the run's out_dir")
    rows: int = Field(16, ge=1, le=4096, description="the first this many samples are drawn")
    cell: int = Field(14, ge=2, le=64, description="pixels per position (square cells)")
    title: str | None = Field(None, description="a line of text above the strip")

    def run(self, samples: DiscreteSamples, denoiser: DiscreteDenoiser, ctx: NodeContext) -> str:
        """Write the strip; returns its absolute path."""
        if samples.tokens is None or samples.tokens.shape[0] == 0:
            raise NodeError("input 'samples' holds no sequences; link a discrete.sample output")
        if samples.tokens.shape[1] > 0 and int(samples.tokens.max()) >= denoiser.vocab.size:
            raise NodeError(f"input 'samples' holds token ids up to {int(samples.tokens.max())} but the denoiser's "
                            f"vocabulary has {denoiser.vocab.size}: link the model that drew them")
        labels = ["" if i in denoiser.vocab.eos or i == denoiser.mask_id else text_of(b)
                  for i, b in enumerate(denoiser.vocab.tokens)]
        picture = with_title(strip(samples.tokens[:self.rows], samples.revealed[:self.rows], labels, self.cell),
                             self.title)
        return str(atomic_write(resolve_output(self.path, ctx.out_dir), lambda f: picture.save(f, format="PNG")))
