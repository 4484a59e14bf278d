"""discrete_sampler.remdm: ReMDM remasking (Wang et al. 2025, "Remasking Discrete Diffusion Models with
Inference-Time Scaling", eqs. 6-7): from t to s a decoded token is masked again with probability
sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t), and a masked one is decoded with probability
(alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t), its token from p(x0 | x_t). The forward marginals
q(z_t | x) are those of masked diffusion for every admissible sigma, so a pretrained model samples it
unchanged; sigma = 0 is MDLM's ancestral step. sigma strategies: `cap` min(eta, sigma_max), `rescale`
eta sigma_max, `conf` eta sigma_max spread over decoded tokens by softmax(-confidence at decoding)."""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from ...api import node
from ...core.noise import NoiseSource
from ...lm.model import normalise
from ..denoiser import DiscreteDenoiser
from ..draws import REMASK, TOKEN, UNMASK, categorical, uniform
from ..sampler import DiscreteSampler
from ..schedule import MaskSchedule
from ..state import STILL_MASKED, DiscreteState
from .unmasking import next_times


@node("discrete_sampler.remdm", version=1)
class ReMDM(DiscreteSampler):
    """Implements ReMDM's remasking sampler (Wang et al. 2025): decoded tokens may be masked again and redrawn."""

    strategy: Literal["cap", "rescale", "conf"] = Field(
        "cap", description="sigma_t: min(eta, sigma_max), eta * sigma_max, or eta * sigma_max shared among decoded "
        "tokens by softmax(-their confidence when decoded)")
    eta: float = Field(0.04, ge=0, le=1, description="remasking strength (0: MDLM's ancestral sampler)")
    temperature: float = Field(1.0, gt=0, le=100, description="tokens drawn from p(x0 | x_t)^(1/T)")

    def init(self, state: DiscreteState, schedule: MaskSchedule, den: DiscreteDenoiser | None = None) -> DiscreteState:
        """history = (confidence of each position's token when it was decoded (B, L), inf where none),)."""
        psi = torch.full(state.tokens.shape, math.inf, dtype=torch.float64, device=state.device)
        return super().init(state, schedule, den).replace(history=(psi,))

    def sigma(self, a_t: torch.Tensor, a_s: torch.Tensor, last: torch.Tensor, psi: torch.Tensor,
              decoded: torch.Tensor) -> torch.Tensor:
        """(B, L) sigma_t of every position (0 on the last step): the row's sigma for `cap` and `rescale`;
        for `conf` each decoded token's share, 0 at masked positions (whose sigma enters their decoding
        probability, eq. 6)."""
        sigma_max = torch.clamp((1.0 - a_s) / a_t.clamp(min=1e-300), max=1.0)  # (B,) eq. 7
        sigma_max = torch.where(last, torch.zeros_like(sigma_max), sigma_max)
        if self.strategy == "cap":
            sig = torch.minimum(torch.full_like(sigma_max, self.eta), sigma_max)[:, None].expand_as(psi)
        elif self.strategy == "rescale":
            sig = (self.eta * sigma_max)[:, None].expand_as(psi)
        else:
            neg = torch.where(decoded, -psi, torch.full_like(psi, -math.inf))  # (B, L)
            share = torch.softmax(torch.where(decoded.any(-1, keepdim=True), neg, torch.zeros_like(neg)), -1)
            return torch.where(decoded, share * (self.eta * sigma_max)[:, None], torch.zeros_like(psi))
        return sig

    def step(self, den: DiscreteDenoiser, schedule: MaskSchedule, state: DiscreteState,
             noise: NoiseSource) -> DiscreteState:
        t_next = next_times(schedule, state)  # (B,)
        a_t, a_s, last = schedule.alpha(state.t), schedule.alpha(t_next), t_next <= 0
        (psi,) = state.history
        masked = state.masked(den.mask_id) & ~state.fixed  # (B, L)
        decoded = ~state.masked(den.mask_id) & ~state.fixed  # (B, L)
        sig = self.sigma(a_t, a_s, last, psi, decoded)  # (B, L)
        logp = den(state.tokens, state.t)  # (B, L, V)
        if self.temperature != 1.0:
            logp = normalise(logp.to(torch.float64) / self.temperature)
        drawn = categorical(noise, logp, state.particle, state.step, TOKEN, self.precision)  # (B, L)
        p_unmask = ((a_s[:, None] - (1.0 - sig) * a_t[:, None]) / (1.0 - a_t[:, None]).clamp(min=1e-300)).clamp(0, 1)
        p_unmask = torch.where(last[:, None], torch.ones_like(p_unmask), p_unmask)  # the last step decodes all
        u = uniform(noise, state.particle, state.step, (state.length,), UNMASK)  # (B, L)
        v = uniform(noise, state.particle, state.step, (state.length,), REMASK)  # (B, L)
        unmask, remask = masked & (u < p_unmask), decoded & (v < sig)
        conf = logp.to(torch.float64).gather(-1, drawn[..., None])[..., 0].exp()  # (B, L) p(drawn)
        step = state.step + 1
        tokens = torch.where(unmask, drawn, torch.where(remask, torch.full_like(drawn, den.mask_id), state.tokens))
        revealed = torch.where(unmask, step[:, None].expand_as(drawn),
                               torch.where(remask, torch.full_like(drawn, STILL_MASKED), state.revealed))
        psi = torch.where(unmask, conf, torch.where(remask, torch.full_like(psi, math.inf), psi))
        return state.replace(tokens=tokens, revealed=revealed, step=step, t=t_next.to(torch.float64), history=(psi,))
