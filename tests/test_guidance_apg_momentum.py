"""guidance.apg momentum: the running average v <- (x0_c - x0_u) + beta v over model calls, carried per
particle in State.memory by run_steps: equal to a hand-written loop with one buffer (Euler: one update per
step; Heun: two, as diffusers' MomentumBuffer), batch-split and particle-order invariant, and refused where
the memory cannot follow the particles (partial-batch calls, search strategies, nested guidance)."""
import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.denoiser import CountingDenoiser
from samplegraph.nodes.core.sampler import run_steps, step_once
from samplegraph.nodes.guidance.apg import APG
from samplegraph.nodes.guidance.cfg import CFG
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.rewards.reward import LinearReward
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.euler_ancestral import EulerAncestral
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.nodes.search.best_of_n import BestOfN

F64 = torch.float64
SIGMAS = Karras(steps=10, sigma_min=0.01, sigma_max=20.0).run()
APG_PARAMS = {"scale": 4.0, "eta": 0.0, "norm_threshold": 2.0}


@pytest.fixture(scope="module")
def models():
    mix = ModelGMM(preset="ring", modes=8, std=0.4, classes=[0, 0, 1, 1, 2, 2, 3, 3]).run()
    return ModelCondition(label=1).run(mix), ModelCondition().run(mix)


def start(n: int, seed: int = 0) -> torch.Tensor:
    return 20.0 * torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))  # (n, 2)


def solve(sampler, denoise, x: torch.Tensor, first: int = 0) -> torch.Tensor:
    """x (B, ...) sampled as particles first..first+B-1 (their noise keys)."""
    ids = torch.arange(first, first + x.shape[0])
    return run_steps(sampler, denoise, sampler.init(x, SIGMAS, particle=ids), NoiseSource(0)).x


def hand_apg(cond, uncond, beta: float, calls_per_step: int, x: torch.Tensor) -> torch.Tensor:
    """Euler (1 call per step) or Heun (2 calls) written out, with one momentum buffer updated per call."""
    rule, v, s = APG(**APG_PARAMS), torch.zeros_like(x), SIGMAS.values

    def guided(xx, sig):
        nonlocal v
        sigma = torch.full((xx.shape[0],), float(sig), dtype=F64)
        c = cond(xx, sigma)
        v = (c - uncond(xx, sigma)) + beta * v
        return rule.project(c, v)

    for i in range(len(s) - 1):
        d = (x - guided(x, s[i])) / s[i]
        x_next = x + d * (s[i + 1] - s[i])
        if calls_per_step == 2 and s[i + 1] > 0:
            d2 = (x_next - guided(x_next, s[i + 1])) / s[i + 1]
            x_next = x + (d + d2) / 2 * (s[i + 1] - s[i])
        x = x_next
    return x


def test_momentum_zero_is_plain_apg_bit_for_bit(models):
    cond, uncond = models
    x = start(64)
    plain = solve(Euler(), APG(**APG_PARAMS).run(cond, uncond), x)
    assert torch.equal(plain, solve(Euler(), APG(**APG_PARAMS, momentum=0.0).run(cond, uncond), x))


@pytest.mark.parametrize("sampler, calls", [(Euler(), 1), (Heun(), 2)])
def test_momentum_matches_a_hand_written_loop_with_one_buffer(models, sampler, calls):
    cond, uncond = models
    x = start(64)
    ours = solve(sampler, APG(**APG_PARAMS, momentum=-0.5).run(cond, uncond), x)
    assert torch.allclose(ours, hand_apg(cond, uncond, -0.5, calls, x), rtol=0, atol=1e-12)
    assert (ours - hand_apg(cond, uncond, 0.0, calls, x)).abs().max() > 1e-3  # momentum changes the result


def advanced(sampler, guided, x: torch.Tensor, steps: int):
    """State of particles x after `steps` steps, their momentum memory included."""
    state = sampler.init(x, SIGMAS)
    for _ in range(steps):
        state = step_once(sampler, guided, CountingDenoiser(guided), state, NoiseSource(0))
    return state


def test_memory_follows_particles_through_splits_and_uneven_steps(models):
    cond, uncond = models
    guided, x = APG(**APG_PARAMS, momentum=0.6).run(cond, uncond), start(64)
    whole = solve(EulerAncestral(), guided, x)
    halves = torch.cat([solve(EulerAncestral(), guided, x[:32]), solve(EulerAncestral(), guided, x[32:], first=32)])
    assert torch.allclose(whole, halves, rtol=0, atol=1e-13)
    # particles 0..31 two steps ahead of the rest in one batch: run_steps gathers and puts their memory
    sampler, idx = Euler(), torch.arange(32)
    mixed = advanced(sampler, guided, x, 0).put(idx, advanced(sampler, guided, x[:32], 2))
    out = run_steps(sampler, guided, mixed, NoiseSource(0)).x
    assert torch.allclose(out, solve(sampler, guided, x), rtol=0, atol=1e-13)
    memoryless = mixed.replace(memory=())  # the same batch with the first half's memory dropped differs
    assert (run_steps(sampler, guided, memoryless, NoiseSource(0)).x - out)[:32].abs().max() > 1e-6


def test_momentum_is_refused_where_its_memory_would_be_lost(models):
    cond, uncond = models
    guided, x = APG(**APG_PARAMS, momentum=-0.5).run(cond, uncond), start(8)
    last = SIGMAS.steps - 1  # half the batch on its last step: Heun's second stage evaluates only the others
    mixed = advanced(Heun(), guided, x, last - 1).put(torch.arange(4), advanced(Heun(), guided, x[:4], last))
    with pytest.raises(NodeError, match="evaluated 4 of 8 particles"):
        run_steps(Heun(), guided, mixed, NoiseSource(0))
    with pytest.raises(NodeError, match="search"):
        BestOfN(n=2).run(guided, SIGMAS, Euler(), x, LinearReward(torch.tensor([1.0, 0.0])),
                         NodeContext.detached(seed=0))
    with pytest.raises(NodeError, match="directly to 'sample'"):
        solve(Euler(), CFG(scale=2.0).run(guided, uncond), x)
