"""sample.adaptive_steps: per-particle adaptive step skipping, training-free (Ye et al. 2024, AdaptiveDiffusion).

"Training-Free Adaptive Diffusion with Bounded Difference Approximation Strategy" (NeurIPS 2024) skips the
network at a step when the third-order difference of the latents says the trajectory is locally smooth,
and reuses the last noise prediction there. Per particle here, so easy samples spend fewer calls than hard
ones: with diff_k = mean |x_k - x_{k-1}|, after step k the next step calls the model unless
|(diff_k + diff_{k-2}) / 2 - diff_{k-1}| <= threshold * diff_{k-1}; the first `warmup` steps always call
it, and so does a step after `max_skip` skips in a row (the authors' code: warm-up 4, max_skip_steps 4).
The solver is Euler on the probability-flow ODE (the eps reused = the slope d reused). Each step makes one
batched call on the rows that need it; the report records the mean calls per particle."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sigmas import Sigmas
from ..core.state import bcast
from .common import to_d
from .sample import check_latent


@node("sample.adaptive_steps", version=1)
class AdaptiveSteps(Node):
    """Implements AdaptiveDiffusion's per-sample step skipping (Ye et al. 2024) over Euler steps, per particle."""

    threshold: float = Field(0.01, ge=0, description="skip when the third-order difference is below this fraction")
    warmup: int = Field(4, ge=3, description="first steps that always call the model (3 diffs are needed)")
    max_skip: int = Field(4, ge=1, description="most skipped steps in a row before a call is forced")

    def run(self, denoise: Denoiser, sigmas: Sigmas, latent: torch.Tensor, ctx: NodeContext) -> torch.Tensor:
        """The final x (B, ...); ctx records calls (batched) and mean_particle_nfe."""
        check_latent(latent)
        x, calls, per_particle = self.solve(denoise, latent, sigmas)
        ctx.add_nfe(calls)
        ctx.record(mean_particle_nfe=float(per_particle.float().mean()))
        return x

    def solve(self, denoise: Denoiser, x: torch.Tensor,
              sigmas: Sigmas) -> tuple[torch.Tensor, int, torch.Tensor]:
        """(final x (B, ...), batched calls, calls per particle (B,))."""
        b = x.shape[0]
        levels = sigmas.values.to(device=x.device, dtype=x.dtype)  # (S + 1,) as the samplers' State holds them
        d = torch.zeros_like(x)  # (B, ...) last slope
        diffs: list[torch.Tensor] = []  # each (B,) mean |x_k - x_{k-1}|
        call = torch.ones(b, dtype=torch.bool, device=x.device)  # (B,) next step calls the model
        skipped = torch.zeros(b, dtype=torch.long, device=x.device)  # (B,) skips in a row
        per_particle = torch.zeros(b, dtype=torch.long, device=x.device)
        calls = 0
        for k in range(levels.numel() - 1):
            sigma, sigma_next = levels[k].expand(b), levels[k + 1].expand(b)  # (B,)
            idx = call.nonzero().squeeze(1)  # (A,)
            if idx.numel():
                xi = x[idx]  # (A, ...)
                d[idx] = to_d(xi, sigma[idx], denoise(xi, sigma[idx]))
                calls += 1
                per_particle[idx] += 1
            x_next = x + d * bcast(sigma_next - sigma, x)  # (B, ...) sampler.euler's update
            diffs.append((x_next - x).flatten(1).abs().mean(1))
            x = x_next
            skipped = torch.where(call, 0, skipped + 1)
            call = self.next_calls(diffs, skipped, k + 1)
        return x, calls, per_particle

    def next_calls(self, diffs: list[torch.Tensor], skipped: torch.Tensor, done: int) -> torch.Tensor:
        """(B,) bool: which particles call the model at step `done` (0-based), from the latent differences."""
        if done < self.warmup:
            return torch.ones_like(skipped, dtype=torch.bool)
        cur, prev, prev2 = diffs[-1], diffs[-2], diffs[-3]
        smooth = ((cur + prev2) / 2 - prev).abs() <= self.threshold * prev  # (B,)
        return ~smooth | (skipped >= self.max_skip)
