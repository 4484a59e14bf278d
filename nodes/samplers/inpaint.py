"""sampler.inpaint: latent inpainting with an ordinary (non-inpainting) model around any sampler: the known
latents are kept, the masked region is sampled.

After every step of the inner sampler the known region of x is replaced by the known latents noised to
the level the step reached, x <- m * x + (1 - m) * (x0_known + sigma_next * eps): the per-step blend of
diffusers' StableDiffusionInpaintPipeline for a 4-channel UNet (after scheduler.step, add_noise of the image
latents to the next timestep; at the last step sigma_next = 0 gives x0_known exactly), which is the blend
of Blended Latent Diffusion (Avrahami, Fried and Lischinski 2023, without its mask dilation and latent
optimisation). eps is the start's noise: the run's keyed noise at the initial-step key of each particle,
which latent.empty / latent.add_noise drew (diffusers reuses its initial `noise` too), regenerated rather
than stored, so particles that are gathered, split or resumed keep their own eps.

Inside the step every x0 estimate is also blended, D' = m * D + (1 - m) * x0_known (the output side of
ComfyUI's KSamplerX0Inpaint): samplers with inner stages (Heun, DPM++ 2S, SDE, restart) then see a known
region consistent with x0_known between the per-step blends, and State.denoised (previews) shows it. For
Euler this changes nothing in the repainted region (its update is elementwise), so Euler equals diffusers.

m is the mask (1 = repaint, 0 = keep; latent.mask gives diffusers' binary one); fractional values blend
per element, as ComfyUI's noise masks do. The known latents and the mask have 1 row (shared by every
particle) or one row per particle id (row p for particle p, so a batch split across workers or stepped in
parts still pairs each particle with its image; samplers that evaluate row subsets inside a step, e.g.
dpm_adaptive, are then refused)."""
from __future__ import annotations

import torch

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.denoiser import Denoiser
from ..core.noise import INITIAL_STEP, NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import WrappedSampler


@node("sampler.inpaint")
class Inpaint(Node):
    """Latent inpainting around any sampler: the per-step blend of Blended Latent Diffusion (Avrahami et al. 2023)."""

    def run(self, sampler: Sampler, latent: torch.Tensor, mask: torch.Tensor) -> Sampler:
        """`sampler` keeping `latent` (1 or B, ...) where `mask` (1 or B, ...; broadcast to it) is 0."""
        if not latent.is_floating_point() or latent.ndim < 2:
            raise NodeError(f"input 'latent' must be the known clean latents (1 or B, C, h, w) (vae.encode), got "
                            f"{tuple(latent.shape)} {latent.dtype}")
        if mask.ndim != latent.ndim or not mask.is_floating_point():
            raise NodeError(f"input 'mask' must be a float mask with a row dimension, (1 or B, 1, h, w) "
                            f"(latent.mask), got {tuple(mask.shape)} {mask.dtype}")
        try:
            torch.broadcast_shapes(mask.shape[1:], latent.shape[1:])
        except RuntimeError:
            raise NodeError(f"input 'mask' {tuple(mask.shape)} does not fit input 'latent' {tuple(latent.shape)}: "
                            f"give a latent-resolution mask (latent.mask) of the same h x w") from None
        if bool(((mask < 0) | (mask > 1)).any()):
            raise NodeError("input 'mask' must lie in [0, 1] (1 = repaint, 0 = keep)")
        return Inpainting(inner=sampler, known=latent, mask=mask)


class Inpainting(WrappedSampler):
    """The inner sampler with the known region blended back after every step; order, cost and noise
    metadata are the inner sampler's, except that it always reads the seed (the blend's noise)."""

    known: torch.Tensor  # (1 or B, ...) clean known latents
    mask: torch.Tensor  # (1 or B, ...) broadcastable to known: 1 = repaint, 0 = keep

    @property
    def draws_noise(self) -> bool:
        """The known region is re-noised with the seed's initial noise every step."""
        return True

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """The inner sampler's state; x must have the known latents' shape."""
        if x.shape[1:] != self.known.shape[1:]:
            raise NodeError(f"sampler.inpaint: the latent being sampled is {tuple(x.shape)} but input 'latent' (the "
                            f"known latents) is {tuple(self.known.shape)}; they must have the same (C, h, w)")
        return self.inner.init(x, sigmas, particle)

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """The inner step with blended x0 estimates, then x's known region at the level reached."""
        known, mask = self.rows(state)  # (B|1, ...) each
        out = self.inner.step(KnownDenoiser(denoise, known, mask), state, noise)
        eps = noise.like(out.x, out.particle, INITIAL_STEP)  # (B, ...) the start's noise
        noised = known + bcast(out.sigma, out.x) * eps  # (B, ...) x0_known at the level reached (0: exact)
        return out.replace(x=blend(out.x, noised, mask))

    def rows(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """known and mask on x's device and dtype: one row for every particle, or row p for particle p."""
        x, particle = state.x, state.particle
        picked = []
        for name, t in (("latent", self.known), ("mask", self.mask)):
            t = t.to(x.device, x.dtype)
            if t.shape[0] > 1:
                if int(particle.max()) >= t.shape[0]:
                    raise NodeError(f"sampler.inpaint: input '{name}' has {t.shape[0]} rows (one per particle) but "
                                    f"particle {int(particle.max())} is stepped; give one row, shared by every "
                                    f"particle, to search strategies that fork particles")
                t = t[particle]  # (B, ...)
            picked.append(t)
        return picked[0], picked[1]


def blend(x: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """m * x + (1 - m) * known, diffusers' blend; for a binary mask each element is exactly one of the two."""
    return mask * x + (1 - mask) * known  # (B, ...)


class KnownDenoiser(Denoiser):
    """x0 estimates with the known region set to the known latents (ComfyUI's KSamplerX0Inpaint, output side)."""

    def __init__(self, inner: Denoiser, known: torch.Tensor, mask: torch.Tensor):
        self.inner, self.known, self.mask = inner, known, mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if any(t.shape[0] not in (1, x.shape[0]) for t in (self.known, self.mask)):
            raise NodeError(f"sampler.inpaint: the inner sampler evaluated {x.shape[0]} of the batch's rows, which "
                            f"cannot be matched to per-particle known latents; give one known latent and mask "
                            f"(1 row) or use a sampler that steps whole batches")
        return blend(self.inner(x, sigma), self.known, self.mask)  # (B, ...)
