"""discrete_sampler.remdm on model.exact_discrete: sigma = 0 is MDLM's ancestral sampler in distribution;
with remasking an exact denoiser still converges to the exact distribution as steps grow; every sigma
strategy stays within ReMDM's bound sigma_max = min(1, (1 - alpha_s) / alpha_t)."""
from __future__ import annotations

import pytest
import torch

from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.discrete.exact import empirical, exact_distribution, expected_tv, total_variation
from samplegraph.nodes.discrete.exact_model import ModelExactDiscrete
from samplegraph.nodes.discrete.sampler import run_discrete, step_unfinished
from samplegraph.nodes.discrete.samplers.ancestral import Ancestral
from samplegraph.nodes.discrete.samplers.remdm import ReMDM
from samplegraph.nodes.discrete.schedules.linear import LinearSchedule
from samplegraph.nodes.discrete.state import DiscreteState
from samplegraph.nodes.discrete.template import DiscreteInfill, DiscreteTemplate

L = 5
DEN = ModelExactDiscrete(length=L).run()
EXACT = exact_distribution(DEN)


def sample(sampler, steps: int, n: int, seed: int = 0):
    state, _, _ = DiscreteTemplate(length=L).run().start(DEN, n, NoiseSource(seed))
    return run_discrete(sampler, DEN, LinearSchedule(steps), state, NoiseSource(seed))


def tv(sampler, steps: int, n: int) -> float:
    return total_variation(empirical(sample(sampler, steps, n).tokens), EXACT)


def test_no_remasking_is_the_ancestral_sampler_in_distribution():
    """Both biased alike at few steps (TV 0.205 vs 0.211 at 4 steps, N = 20000; floor 0.040)."""
    for steps in (4, 16):
        a, r = sample(Ancestral(), steps, 20000), sample(ReMDM(eta=0.0), steps, 20000, seed=1)
        assert abs(total_variation(empirical(a.tokens), EXACT) - total_variation(empirical(r.tokens), EXACT)) < 0.02
        two_sample_floor = 2 ** 0.5 * expected_tv(empirical(a.tokens), 20000)  # both sets are noisy
        assert total_variation(empirical(a.tokens), empirical(r.tokens)) < 1.4 * two_sample_floor


@pytest.mark.parametrize("strategy", ["rescale", "conf"])
def test_remasking_converges_to_the_exact_distribution_as_steps_grow(strategy):
    """eta 0.5, N = 20000 (floor 0.040): rescale 0.217, 0.103, 0.071, 0.050 at 4, 16, 64, 256 steps;
    conf 0.224, 0.103, 0.067, 0.051."""
    sampler = ReMDM(strategy=strategy, eta=0.5)
    tvs = [tv(sampler, s, 20000) for s in (4, 16, 256)]
    assert tvs[0] > tvs[1] > tvs[2] and tvs[2] < 1.45 * expected_tv(EXACT, 20000)


def test_decoded_tokens_are_masked_again_and_the_last_step_decodes_everything():
    sampler, schedule = ReMDM(strategy="rescale", eta=1.0), LinearSchedule(8)
    state, _, _ = DiscreteInfill(text="a___b").run().start(DEN, 256, NoiseSource(3))
    state = sampler.init(state, schedule)
    remasked = 0
    for _ in range(8):
        before = state.masked(DEN.mask_id)
        state = step_unfinished(sampler, DEN, schedule, state, NoiseSource(3))
        remasked += int((~before & state.masked(DEN.mask_id)).sum())
    assert remasked > 0 and not bool(state.masked(DEN.mask_id).any())
    assert bool((state.tokens[:, [0, 4]] == torch.tensor([0, 1])).all())


@pytest.mark.parametrize("strategy", ["cap", "rescale", "conf"])
def test_sigma_stays_within_the_bound(strategy):
    gen = torch.Generator().manual_seed(0)
    a_t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.9
    a_s = a_t + (1 - a_t) * torch.rand(64, generator=gen, dtype=torch.float64)
    decoded = torch.rand(64, 7, generator=gen) < 0.6
    psi = torch.rand(64, 7, generator=gen, dtype=torch.float64)
    sig = ReMDM(strategy=strategy, eta=0.9).sigma(a_t, a_s, torch.zeros(64, dtype=torch.bool), psi, decoded)
    bound = torch.clamp((1 - a_s) / a_t, max=1.0)[:, None]
    assert bool((sig <= bound + 1e-12).all()) and (strategy != "conf" or bool((sig[~decoded] == 0).all()))
    if strategy == "conf":  # eta sigma_max shared among the decoded tokens, least confident first
        rows = decoded.any(-1)
        assert torch.allclose(sig.sum(-1)[rows], 0.9 * bound[rows, 0])


def forward_law(alpha: float) -> dict[tuple[int, ...], float]:
    """Exact law of z_t: x from the model, each position masked independently with probability 1 - alpha."""
    out: dict[tuple[int, ...], float] = {}
    for x, p in EXACT.items():
        for pattern in range(2 ** L):
            keep = [(pattern >> i) & 1 for i in range(L)]
            z = tuple(t if k else DEN.mask_id for t, k in zip(x, keep))
            out[z] = out.get(z, 0.0) + p * alpha ** sum(keep) * (1 - alpha) ** (L - sum(keep))
    return out


def position_law(dist: dict[tuple[int, ...], float]) -> torch.Tensor:
    out = torch.zeros(L, DEN.vocab.size, dtype=torch.float64)
    for z, p in dist.items():
        out[torch.arange(L), torch.tensor(z)] += p
    return out  # (L, V)


@pytest.mark.parametrize("strategy,eta", [("cap", 0.0), ("cap", 0.3), ("rescale", 1.0)])
def test_one_step_keeps_every_positions_forward_marginal(strategy, eta):
    """z_t drawn exactly from q_t; one ReMDM step with the exact denoiser gives each position its law under q_s,
    whatever sigma (ReMDM's marginal-preservation property; the joint is exact only as steps grow)."""
    n, schedule = 20000, LinearSchedule(4)
    t = float(schedule.times[1])  # alpha 0.25 -> 0.5
    q_t = forward_law(1 - t)
    keys = list(q_t)
    rows = torch.multinomial(torch.tensor([q_t[k] for k in keys]), n, replacement=True,
                             generator=torch.Generator().manual_seed(0))
    z = torch.tensor(keys)[rows]  # (n, L)
    sampler = ReMDM(strategy=strategy, eta=eta)
    state = sampler.init(DiscreteState.start(z, torch.zeros_like(z, dtype=torch.bool), torch.arange(n)), schedule)
    state = state.replace(step=torch.ones(n, dtype=torch.long), t=torch.full((n,), t, dtype=torch.float64))
    out = sampler.step(DEN, schedule, state, NoiseSource(1))
    got = torch.nn.functional.one_hot(out.tokens, DEN.vocab.size).double().mean(0)  # (L, V)
    assert float((got - position_law(forward_law(1 - float(schedule.times[2])))).abs().max()) < 4 * (0.25 / n) ** 0.5
