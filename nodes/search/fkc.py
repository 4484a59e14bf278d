"""search.fkc: Feynman-Kac correctors, weighted SDE sampling + SMC for products, geometric means and
annealed powers of diffusion models (Skreta et al. 2025, arXiv 2503.02819), in the space x = x0 + sigma eps.

Derivation (VE / EDM space, variance time s = sigma^2). Noising x = x0 + sigma eps is Brownian motion in s,
so every model's marginals solve the heat equation d_s p = 1/2 Lap p, i.e. with S = grad log p_s and
L = Lap log p_s: d_s log p = 1/2 (L + |S|^2). Run time backwards, tau = -s, and simulate
    dx = u(x) dtau + dW_tau            (integrated by weighted.kernel, an exponential integrator)
while accumulating d log w = g(x) dtau. The weighted particles then represent an unnormalised density
mu_tau solving the Feynman-Kac PDE  d_tau mu = -div(mu u) + 1/2 Lap mu + g mu  (Ito + Feynman-Kac).
Asking mu = q~ = p1^a p2^b (marginals at the same s; at s = 0 this is the target) gives
    g = d_tau log q~ + div u + u . grad log q~ - 1/2 (Lap log q~ + |grad log q~|^2).
With d_tau log q~ = -a/2 (L1 + |S1|^2) - b/2 (L2 + |S2|^2) and the drift u = a S1 + b S2 (so div u and the
Laplacian terms cancel: no divergence is ever needed), this is
    g = 1/2 (|u|^2 - a |S1|^2 - b |S2|^2),
the paper's increments written in our space: annealing p^beta (a = beta, b = 0): g = beta (beta - 1) / 2 |S|^2;
product p1 p2 (a = b = 1): g = S1 . S2; CFG / geometric p1^beta p2^(1-beta): g = beta (beta - 1) / 2 |S1 - S2|^2.
Scores come from the denoisers (Tweedie): S_i = (D_i(x) - x) / sigma^2. Weights integrate g over tau by the
trapezoid rule (g at sigma_k takes half of each adjacent step; left point on the last step to sigma 0),
and a group is resampled at sigma_k after its weights are updated, before the kernel moves it.
At sigma_max every p_s is ~ N(m, sigma^2) with sigma^2 >> data variance, so q~ ~ N(0, sigma^2 / (a + b)):
the latent is scaled by (a + b)^(-1/2) (error O(var_data / sigma_max^2)). Without the weights (g = 0) the
same SDE samples neither target (the naive combined-score sampler). The weights are exact only as steps
shrink: on p = N(0, 0.25), the variance of p^2 (exact 0.125; naive SDE 1/12 = 0.083 in the limit) came out
at 0.128, 0.130 and 0.125 with 100, 400 and 1600 Karras steps (one group of 20000 particles, +-0.005)."""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from ...graph.errors import NodeError
from ..api import node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sigmas import Sigmas
from ..core.state import bcast
from .budget import Budget, BudgetDenoiser
from .common import layout, require_plain
from .particles import Particles
from .resample import ResamplingSearch
from .weighted import start, move, step_increment, report, resample_step, score, select, sq_norm

Target = Literal["product", "geometric", "anneal"]


@node("search.fkc", version=1)
class Fkc(ResamplingSearch):
    """Implements Feynman-Kac correctors (Skreta et al. 2025): weighted SDE sampling with SMC resampling."""

    target: Target = Field("geometric", description="'product': p1 p2; 'geometric': p1^beta p2^(1-beta) (CFG with "
                                                     "scale beta, p1 conditional, p2 unconditional); 'anneal': p1^beta")
    beta: float = Field(2.0, description="exponent of p1 (anneal, geometric); not set for 'product'")
    weighted: bool = Field(True, description="False: the naive combined-score SDE without weights or resampling")

    @model_validator(mode="after")
    def _beta_used(self) -> Fkc:
        if self.target == "product" and "beta" in self.model_fields_set:
            raise ValueError("'beta' is not used by target 'product' (p1 p2); remove it")
        if self.exponents()[0] + self.exponents()[1] <= 0:
            raise ValueError(f"beta={self.beta} gives p1^a p2^b with a + b <= 0, which has no normalisable start")
        return self

    def exponents(self) -> tuple[float, float]:
        """(a, b): the target is p1^a p2^b."""
        return {"product": (1.0, 1.0), "geometric": (self.beta, 1.0 - self.beta), "anneal": (self.beta, 0.0)}[
            self.target]

    def run(self, denoise: Denoiser, sigmas: Sigmas, latent: torch.Tensor, ctx: NodeContext,
            denoise2: Denoiser | None = None) -> torch.Tensor:
        """Samples of p1^a p2^b: (B, ...) for keep='all', (G, ...) for keep='one'; latent ~ N(0, sigma_max^2)."""
        return self.correct(denoise, sigmas, latent, ctx, denoise2)[0]

    def correct(self, denoise: Denoiser, sigmas: Sigmas, latent: torch.Tensor, ctx: NodeContext,
                denoise2: Denoiser | None = None) -> tuple[torch.Tensor, Particles]:
        """The selected samples and the final weighted particles (before the final draw)."""
        a, b = self.exponents()
        if self.target != "anneal" and denoise2 is None:
            raise NodeError(f"search.fkc target '{self.target}' combines two models; connect input 'denoise2' "
                            f"(for 'geometric' the unconditional model)")
        group, groups = layout(latent, self.particles)
        budget = Budget(groups)
        models = (denoise,) if self.target == "anneal" else (denoise, denoise2)
        require_plain("search.fkc", *models)
        dens = [BudgetDenoiser(d, budget, group, self.max_batch) for d in models]
        p = Particles.start(start(latent / math.sqrt(a + b), sigmas), group, groups)
        trigger = self.trigger()
        total, resamplings, seed = sigmas.steps, 0, ctx.noise.seed
        d_prev = torch.zeros(p.batch, dtype=torch.float64, device=latent.device)  # (B,) previous step's d
        for k in range(total):
            ctx.check_cancelled()
            g, x0 = self.rate(dens, p, (a, b))  # (B,), (B, ...)
            d = step_increment(p.state)  # (B,)
            if self.weighted:  # trapezoid in tau: g_k gets half of each adjacent step (the last step: left point)
                p = p.reweight(g * (0.5 * d_prev + (0.5 if k < total - 1 else 1.0) * d))
                if k < total - 1:
                    p, (x0,), n = resample_step(p, trigger, self.resampler, seed, k, float(sigmas.values[k]),
                                                  (x0,))
                    resamplings += n
            z = ctx.noise.normal(p.state.particle, k, tuple(x0.shape[1:]), dtype=x0.dtype, device=x0.device)
            p, d_prev = p.with_state(move(p.state, x0, z, a + b)), d
            ctx.progress(k + 1, total)
        out = select(p, self.keep, self.resampler, seed)
        report(ctx, budget, p, resamplings)
        return out, p

    def rate(self, dens: list[BudgetDenoiser], p: Particles, ab: tuple[float, float]
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight rate g(x) (B,) per unit variance time and the combined x0 = (a D1 + b D2) / (a + b) (B, ...),
        whose drift c (x0 - x) / sigma^2 (c = a + b) is u = a S1 + b S2."""
        st = p.state
        for den in dens:
            den.group = p.group
        scores = [score(den(st.x, st.sigma), st.x, st.sigma) for den in dens]  # each (B, ...)
        u = sum(e * s for e, s in zip(ab, scores))  # (B, ...)
        g = 0.5 * (sq_norm(u) - sum(e * sq_norm(s) for e, s in zip(ab, scores)))  # (B,)
        return g, st.x + bcast(st.sigma.to(u.dtype), u) ** 2 * u / sum(ab)
