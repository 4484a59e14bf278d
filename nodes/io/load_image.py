"""io.load_image: a local image file as a batch of one, (1, 3, H, W) float32 in [0, 1] (RGB; alpha dropped)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..models.safetensors_model import file_state


@node("io.load_image")
class LoadImage(Node):
    """Read a PNG/JPEG/WebP image (Pillow) as RGB values in [0, 1], the input of vae.encode (img2img)."""

    path: str = Field(min_length=1, description="local image file")

    def input_files(self) -> list[Path]:
        """The image this node reads (a server confines it to its model roots)."""
        return [Path(self.path).expanduser()]

    def external_state(self) -> Any:
        """The file's size and mtime: a rewritten image invalidates the cache."""
        return file_state(Path(self.path))

    def run(self) -> torch.Tensor:
        array = read_pixels(self.path, "RGB")  # (H, W, 3) in 0..255
        return torch.from_numpy(array / 255.0).permute(2, 0, 1)[None].contiguous()  # (1, 3, H, W)


def read_pixels(path: str, mode: str) -> np.ndarray:
    """The image at `path` converted to the Pillow `mode` ("RGB", "L", "RGBA"), float32 in 0..255 (H, W[, C])."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as e:
        raise NodeError(f"param 'path': cannot read '{path}' as an image ({e})") from None
