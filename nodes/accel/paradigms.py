"""sample.paradigms: ParaDiGMS (Shih et al. 2023, "Parallel Sampling of Diffusion Models"): Picard
iterations over a sliding window of steps, every step of the window evaluated in one batched call.

Scheduler state: the trajectory x_0..x_S (S steps) starts as copies of x_0; `start` is the first
point not yet known exactly. Each round evaluates the denoiser at the window's points
x_start..x_start+w-1 at once (rows of w * B, each with its own sigma: our per-particle sigma), forms
each step's increment inc_k = step(x_k) - x_k (an Euler step, or a DDIM step with eta and noise
drawn up front from the NoiseSource, the same normals as sampler.ddim's), and replaces the window
by the Picard update x_start+j+1 = x_start + inc_start + ... + inc_start+j (the first one is the
sequential step itself, so a window of 1 is the sequential sampler bit for bit). A point is
converged when its squared change per dimension, over every particle, is at most
tolerance^2 * sigma_k^2 (sigma_k: the level its step starts from); the window slides past the
converged prefix (at least one point, the exact one), new points start as copies of the last.
Rounds (sequential batched calls) and evaluations are recorded in the node's report.

Departure: ParaDiGMS scales the tolerance by the step's posterior noise variance; sigma_k^2 (the
noise level of x at the step) is used here, which is never 0 before the last step."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sigmas import Sigmas
from ..core.state import bcast
from ..samplers.common import ancestral_step, to_d
from ..samplers.sample import check_latent


class StepRule:
    """One sampler step x_k -> x_k+1 from the denoiser's x0, for many steps at once (rows of w * B)."""

    def __init__(self, kind: str, eta: float, noise: NoiseSource, particle: torch.Tensor):
        self.kind, self.eta, self.noise, self.particle = kind, eta, noise, particle

    def draws(self) -> bool:
        return self.kind == "ddim" and self.eta > 0

    def noise_of(self, like: torch.Tensor, steps: int) -> torch.Tensor:
        """(S, B, ...) normals keyed by (particle, step), as sampler.ddim draws them; zeros if none."""
        if not self.draws():
            return like.new_zeros((steps, *like.shape))
        return torch.stack([self.noise.like(like, self.particle, k) for k in range(steps)])

    def __call__(self, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                 z: torch.Tensor) -> torch.Tensor:
        """x_k+1 (N, ...) from x_k, x0 (N, ...) at sigma -> sigma_next (N,) with noise z (N, ...)."""
        if self.kind == "euler":
            return x + to_d(x, sigma, x0) * bcast(sigma_next - sigma, x)  # sampler.euler's arithmetic
        down, up = ancestral_step(sigma, sigma_next, self.eta)  # (N,)
        out = x0 + (x - x0) / bcast(sigma, x0) * bcast(down, x0)  # sampler.ddim's arithmetic
        if self.eta > 0:
            out = out + z * bcast(torch.where(sigma_next > 0, up, torch.zeros_like(up)), out)
        return out


def picard_round(denoise: Denoiser, rule: StepRule, traj: torch.Tensor, noise: torch.Tensor,
                 sig: torch.Tensor, start: int, w: int) -> torch.Tensor:
    """The window's new points x_start+1..x_start+w (w, B, ...) from one batched call at x_start..x_start+w-1."""
    b = traj.shape[1]
    pts = traj[start:start + w]  # (w, B, ...)
    flat = pts.reshape(w * b, *pts.shape[2:])  # (w B, ...)
    s = sig[start:start + w].repeat_interleave(b)  # (w B,)
    s_next = sig[start + 1:start + w + 1].repeat_interleave(b)  # (w B,)
    x0 = denoise(flat, s)  # (w B, ...)
    z = noise[start:start + w].reshape(flat.shape)  # (w B, ...)
    nxt = rule(flat, x0, s, s_next, z).reshape(pts.shape)  # (w, B, ...)
    new = traj[start] + torch.cumsum(nxt - pts, dim=0)  # (w, B, ...) Picard: x_start + sum of increments
    new[0] = nxt[0]  # the exact sequential step (window 1 = the sequential sampler, bit for bit)
    return new


def converged_prefix(new: torch.Tensor, old: torch.Tensor, sig: torch.Tensor, start: int, tol: float) -> int:
    """How many leading window points (>= 1) changed by at most tol^2 sigma_k^2 per dimension (all particles)."""
    err = (new - old).flatten(2).pow(2).mean(2).amax(1)  # (w,)
    ok = err <= tol ** 2 * sig[start:start + new.shape[0]] ** 2  # (w,)
    ok[0] = True
    bad = (~ok).nonzero()
    return int(bad[0]) if bad.numel() else new.shape[0]


def paradigms(denoise: Denoiser, sigmas: torch.Tensor, x: torch.Tensor, rule: StepRule, window: int,
              tolerance: float) -> tuple[torch.Tensor, int, int]:
    """Final x (B, ...), sequential rounds and per-particle evaluations of ParaDiGMS over sigmas (S+1,)."""
    steps = sigmas.numel() - 1
    sig = sigmas.to(device=x.device, dtype=x.dtype)  # (S+1,)
    traj = x.unsqueeze(0).repeat(steps + 1, *([1] * x.ndim))  # (S+1, B, ...)
    noise = rule.noise_of(x, steps)  # (S, B, ...)
    start, rounds, evals = 0, 0, 0
    while start < steps:
        w = min(window, steps - start)
        new = picard_round(denoise, rule, traj, noise, sig, start, w)  # (w, B, ...)
        done = converged_prefix(new, traj[start + 1:start + w + 1], sig, start, tolerance)
        traj[start + 1:start + w + 1] = new
        rounds, evals = rounds + 1, evals + w
        start += done
        end = min(start + window, steps)
        if end > start + w - done:  # new window points start as copies of the latest point
            traj[start + w - done + 1:end + 1] = traj[start + w - done]
    return traj[steps], rounds, evals


@node("sample.paradigms")
class SampleParadigms(Node):
    """ParaDiGMS (Shih et al. 2023): Picard iterations over a sliding window, many sigmas per batched call."""

    uses_seed: ClassVar[bool] = True

    window: int = Field(8, ge=1, description="steps evaluated together per round (1 = the sequential sampler)")
    tolerance: float = Field(1e-3, ge=0.0, description="a point converges when its change per dimension is at "
                             "most tolerance * sigma (RMS over dimensions, every particle)")
    step: Literal["euler", "ddim"] = Field("euler", description="euler (sampler.euler) or ddim (sampler.ddim)")
    eta: float = Field(0.0, ge=0.0, le=1.0, description="ddim only: 0 deterministic, 1 DDPM posterior noise "
                       "(normals drawn up front, the same as sampler.ddim's)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, latent: torch.Tensor, ctx: NodeContext) -> torch.Tensor:
        """The final x (B, ...); the report records rounds, evaluations and the window."""
        check_latent(latent)
        if denoise.stateful:
            raise NodeError("sample.paradigms evaluates many steps of a particle in one call, so a stateful "
                            "denoiser (a cached model, guidance.apg with momentum) cannot keep its memory; "
                            "connect a plain or guided model")
        if self.step == "euler" and self.eta != 0:
            raise NodeError("sample.paradigms: 'eta' applies to step 'ddim' only; set step to 'ddim' or eta to 0")
        particle = torch.arange(latent.shape[0], device=latent.device)
        rule = StepRule(self.step, self.eta, ctx.noise, particle)
        x, rounds, evals = paradigms(denoise, sigmas.values, latent, rule, self.window, self.tolerance)
        ctx.add_nfe(evals)
        ctx.record(rounds=rounds, evaluations=evals, steps=sigmas.values.numel() - 1, window=self.window)
        return x
