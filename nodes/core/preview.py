"""Preview: a cheap picture of a latent for progress previews, what `sample` shows of its x0 estimate every
`every` steps (a StepPreview event through NodeContext.preview). The picture is a per-family linear map of
the latent channels to RGB, rgb = factors^T z + bias, in [-1, 1] and shown as (rgb + 1) / 2, the
"latent2rgb" previews of ComfyUI (latent_preview.py); latent.preview builds one from published factors."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...graph.errors import NodeError


@dataclass(frozen=True)
class Preview:
    """A latent -> RGB projection: factors (C, 3), bias (3,), applied every `every` steps (and at the last)."""

    factors: torch.Tensor  # (C, 3) float64
    bias: torch.Tensor  # (3,) float64
    every: int = 1
    label: str = ""  # whose factors, for error messages ("sd", "flux", ...)

    def due(self, step: int, total: int) -> bool:
        """True after step `step` (1-based) of `total` when a preview is shown."""
        return step % self.every == 0 or step == total

    def check(self, latent: torch.Tensor) -> None:
        """NodeError unless latent is (B, C, h, w) with the C channels the factors project."""
        if latent.ndim != 4 or latent.shape[1] != self.factors.shape[0]:
            raise NodeError(f"input 'preview': its {self.label or 'latent'} projection takes (B, "
                            f"{self.factors.shape[0]}, h, w) latents, got {tuple(latent.shape)}")

    def image(self, latent: torch.Tensor) -> torch.Tensor:
        """The picture (3, h, w) float32 in [0, 1] of the first row of latent (B, C, h, w)."""
        self.check(latent)
        z = latent[0].to(torch.float32)  # (C, h, w)
        f, b = self.factors.to(z), self.bias.to(z)  # (C, 3), (3,)
        rgb = torch.einsum("chw,cr->rhw", z, f) + b[:, None, None]  # (3, h, w) in about [-1, 1]
        return ((rgb + 1) / 2).clamp(0, 1).cpu()  # (3, h, w)
