"""discrete_sampler.uniform: the reverse process of uniform-noise discrete diffusion (Austin et al.
2021, D3PM's uniform kernel): per position p(x_s | x_t) = sum_x0 p(x0 | x_t) q(x_s | x_t, x0).

With K clean ids and q(x_t | x0) = alpha(t) [x_t = x0] + (1 - alpha(t)) / K, the bridge is
q(x_s | x_t, x0) = q(x_t | x_s) q(x_s | x0) / q(x_t | x0), where q(x_t | x_s) has alpha(t) / alpha(s).
With the exact denoising posterior each position's p(x_s | x_t) is the exact marginal; positions
are drawn independently, which is exact as the steps shrink. ("Uniform Diffusion Models Revisited",
Gourevitch et al. 2026, show that a trained network fits a leave-one-out posterior instead of
p(x0 | x_t) under the plug-in ELBO; for a model returning p(x0 | x_t), as the contract asks, this
bridge is the one that applies.) The last step (s = 0) draws x0 from p(x0 | x_t)."""
from __future__ import annotations

from typing import ClassVar

import torch

from ...api import node
from ...core.noise import NoiseSource
from ..denoiser import DiscreteDenoiser
from ..draws import TOKEN, categorical
from ..sampler import DiscreteSampler
from ..schedule import MaskSchedule
from ..state import DiscreteState
from .unmasking import next_times


def uniform_bridge(logp: torch.Tensor, tokens: torch.Tensor, a_t: torch.Tensor, a_s: torch.Tensor) -> torch.Tensor:
    """(B, L, K) log p(x_s | x_t) per position from log p(x0 | x_t) (B, L, K), x_t tokens (B, L) and
    alpha(t) < alpha(s) (B,): sum_v p(v | x_t) q(x_t | x_s) q(x_s | v) / q(x_t | v)."""
    k = logp.shape[-1]
    a_t, a_s = a_t[:, None, None], a_s[:, None, None]  # (B, 1, 1)
    seen = torch.nn.functional.one_hot(tokens, k).to(torch.float64)  # (B, L, K)
    q_t_x0 = a_t * seen + (1.0 - a_t) / k  # (B, L, K) q(x_t | x0 = v)
    a_ts = a_t / a_s  # alpha(t | s)
    q_t_xs = a_ts * seen + (1.0 - a_ts) / k  # (B, L, K) q(x_t | x_s = j)
    w = logp.to(torch.float64).exp() / q_t_x0  # (B, L, K) p(v | x_t) / q(x_t | v)
    mix = a_s * w + (1.0 - a_s) / k * w.sum(-1, keepdim=True)  # (B, L, K) sum_v w_v q(x_s = j | v)
    p = q_t_xs * mix  # (B, L, K)
    return torch.log(p / p.sum(-1, keepdim=True))


@node("discrete_sampler.uniform", version=1)
class Uniform(DiscreteSampler):
    """Uniform-noise reverse steps x_s ~ sum_x0 p(x0 | x_t) q(x_s | x_t, x0) per position (Austin et al. 2021, D3PM)."""

    noise_kinds: ClassVar[frozenset[str]] = frozenset({"uniform"})

    def step(self, den: DiscreteDenoiser, schedule: MaskSchedule, state: DiscreteState,
             noise: NoiseSource) -> DiscreteState:
        t_next = next_times(schedule, state)  # (B,)
        a_t = schedule.alpha(state.t)  # (B,)
        a_s = torch.where(t_next <= 0, torch.ones_like(a_t), schedule.alpha(t_next))  # (B,) clean at s = 0
        clean = den.clean_ids.to(state.device)  # (K,)
        logp = den(state.tokens, state.t)[..., clean]  # (B, L, K)
        slot_of = torch.full((den.vocab.size,), -1, dtype=torch.long, device=state.device)
        slot_of[clean] = torch.arange(clean.numel(), device=state.device)
        bridge = uniform_bridge(logp, slot_of[state.tokens], a_t, a_s)  # (B, L, K)
        draw = clean[categorical(noise, bridge, state.particle, state.step, TOKEN, self.precision)]  # (B, L)
        return state.reveal(~state.fixed, draw, t_next)
