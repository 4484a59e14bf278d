"""The memory options vae.encode and vae.decode share: tiled and/or sliced VAE calls (nodes/pipelines/tiling.py)."""
from __future__ import annotations

from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node
from .tiling import Tiling
from .types import Vae


class VaeCall(Node):
    """Base of vae.encode / vae.decode: diffusers' AutoencoderKL enable_tiling / enable_slicing as parameters."""

    tiling: bool = Field(False, description="run the VAE on overlapping tiles, cross-faded (diffusers' "
                                            "enable_tiling): memory of one tile, not of the image")
    tile_size: int | None = Field(None, ge=8, description="tile side in pixels (a multiple of the VAE factor); "
                                                         "None = the VAE's sample_size (diffusers' default)")
    tile_overlap: float = Field(0.25, gt=0, lt=1, description="overlap of neighbouring tiles, a fraction of the tile")
    slicing: bool = Field(False, description="run the VAE on one batch row at a time (diffusers' enable_slicing)")

    def cut(self, vae: Vae) -> Tiling | None:
        """The Tiling for this VAE, or None when both options are off."""
        if not (self.tiling or self.slicing):
            return None
        if self.tiling and not vae.tile:
            raise NodeError(f"param 'tiling': this {type(vae).__name__} cannot tile; set tiling false")
        if self.tile_size is not None and self.tile_size % vae.factor:
            raise NodeError(f"param 'tile_size' = {self.tile_size} must be a multiple of the VAE's factor "
                            f"{vae.factor}")
        return Tiling(self.tiling, self.tile_size, self.tile_overlap, self.slicing)
