"""io.save_image: images (B, 3, H, W) in [0, 1] as one PNG (a grid for a batch), with the workflow.

Provenance follows ComfyUI's convention of PNG tEXt chunks: ComfyUI writes "prompt" (its API graph) and
"workflow" (its editor graph). Ours writes "workflow" = the samplegraph workflow JSON as it ran (overrides
applied, its "seed" field included) and "seed" = the seed; `samplegraph run image.png` re-runs it. No
"prompt" chunk is written: ComfyUI would read one as its own API format, which ours is not."""
from __future__ import annotations

import json
from typing import ClassVar

import torch
from PIL.PngImagePlugin import PngInfo
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from .common import WritesFile, atomic_write, path_with_suffix, resolve_output
from .image_grid import PngPath, tile, to_channels_last, to_picture

WORKFLOW_KEY, SEED_KEY = "workflow", "seed"


@node("io.save_image")
class SaveImage(WritesFile, Node):
    """Save decoded images as an 8-bit PNG (a row-major grid for B > 1) carrying the workflow and seed."""

    cacheable: ClassVar[bool] = False  # writing the file is the point

    path: PngPath = Field(description="output file; relative paths resolve against the run's out_dir")
    columns: int = Field(4, ge=1, description="images per row of the grid")
    metadata: bool = Field(True, description="embed the workflow JSON and the seed (tEXt chunks)")

    def run(self, images: torch.Tensor, ctx: NodeContext) -> str:
        """Write the PNG; returns its absolute path."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise NodeError(f"input 'images' must be RGB images (B, 3, H, W) in [0, 1] (vae.decode's output), "
                            f"got {tuple(images.shape)}")
        grid = tile(to_channels_last(images), self.columns, 0, 0.0)  # (rows*H, cols*W, 3)
        picture = to_picture(grid, 0.0, 1.0, 1)
        info = PngInfo()
        if self.metadata and ctx.workflow is not None:
            info.add_text(WORKFLOW_KEY, json.dumps(ctx.workflow.model_dump(mode="json")))
            info.add_text(SEED_KEY, str(ctx.workflow.seed))
        return str(atomic_write(resolve_output(self.path, ctx.out_dir),
                                lambda f: picture.save(f, format="PNG", pnginfo=info)))
