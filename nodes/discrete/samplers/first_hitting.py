"""discrete_sampler.first_hitting: the first-hitting sampler of Zheng et al. 2024 ("Masked Diffusion
Models are Secretly Time-Agnostic Masked Models and Exploit Inaccurate Categorical Sampling").

In the reverse masked process each of the n masked positions becomes clean at an independent time
whose law is alpha; the first of them to do so, going down from t, hits at t' with
1 - alpha(t') = (1 - alpha(t)) u^(1/n), u ~ U(0, 1), at a uniformly chosen masked position, and
its token is drawn from p(x0 | x_t). One event per step, one denoiser call per token: the law of the
whole reverse process, in exactly L calls, whatever the schedule (it only sets the times)."""
from __future__ import annotations

import torch

from ...api import node
from ...core.noise import NoiseSource
from ..denoiser import DiscreteDenoiser
from ..draws import ORDER, TIME, TOKEN, categorical, uniform
from ..sampler import DiscreteSampler
from ..schedule import MaskSchedule
from ..state import DiscreteState


def free_masked(state: DiscreteState, den: DiscreteDenoiser) -> torch.Tensor:
    """(B, L) bool: masked positions the sampler may fill (not given by the template)."""
    return state.masked(den.mask_id) & ~state.fixed


@node("discrete_sampler.first_hitting", version=1)
class FirstHitting(DiscreteSampler):
    """One token per step at the first-hitting time of the masked positions (Zheng et al. 2024)."""

    def finished(self, state: DiscreteState, schedule: MaskSchedule, den: DiscreteDenoiser) -> torch.Tensor:
        """No masked position left (the schedule's step count is not used)."""
        return ~free_masked(state, den).any(-1)

    def step(self, den: DiscreteDenoiser, schedule: MaskSchedule, state: DiscreteState,
             noise: NoiseSource) -> DiscreteState:
        masked = free_masked(state, den)  # (B, L)
        n = masked.sum(-1).to(torch.float64)  # (B,) >= 1
        u = uniform(noise, state.particle, state.step, (1,), TIME)[:, 0]  # (B,)
        left = (1.0 - schedule.alpha(state.t)) * u ** (1.0 / n)  # (B,) 1 - alpha(t')
        t_next = schedule.time_of(1.0 - left)  # (B,)
        order = uniform(noise, state.particle, state.step, (state.length,), ORDER)  # (B, L)
        pos = torch.where(masked, order, torch.full_like(order, -1.0)).argmax(-1)  # (B,) uniform over masked
        logp = den(state.tokens, t_next)  # (B, L, V)
        rows = torch.arange(state.batch, device=state.device)
        token = categorical(noise, logp[rows, pos][:, None], state.particle, state.step, TOKEN,
                            self.precision)[:, 0]  # (B,)
        update = torch.zeros_like(masked)
        update[rows, pos] = True
        tokens = state.tokens.clone()
        tokens[rows, pos] = token
        return state.reveal(update, tokens, t_next)
