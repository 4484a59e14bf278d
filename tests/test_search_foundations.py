"""Particles, resamplers, triggers and budgets of nodes/search (issue 5, foundations)."""
from __future__ import annotations

import math

import pytest
import torch

from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.search.budget import Budget, BudgetDenoiser
from samplegraph.nodes.search.particles import Particles, child_index
from samplegraph.nodes.search.resample import (METHODS, Trigger, ess_from_log_w, resample, resample_generator,
                                               resample_indices)
from samplegraph.nodes.samplers.euler_ancestral import EulerAncestral

W = torch.tensor([0.05, 0.1, 0.15, 0.3, 0.4], dtype=torch.float64)  # group 0
W2 = torch.tensor([0.7, 0.1, 0.1, 0.1], dtype=torch.float64)  # group 1


def counts(method: str, seeds: int) -> torch.Tensor:
    """Offspring counts (seeds, 9) of two interleaved groups."""
    lw = torch.log(torch.cat([W, W2]))
    group = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1])
    perm = torch.tensor([5, 0, 6, 1, 2, 7, 3, 8, 4])  # interleave the groups in the batch
    out = []
    for s in range(seeds):
        idx = resample_indices(lw[perm], group[perm], 2, method, torch.Generator().manual_seed(s))
        assert bool((group[perm][idx] == group[perm]).all()), "an ancestor crossed groups"
        out.append(torch.bincount(perm[idx], minlength=9))
    return torch.stack(out).to(torch.float64)


@pytest.mark.parametrize("method", METHODS)
def test_offspring_counts_are_unbiased_and_group_isolated(method):
    c = counts(method, 3000)  # (S, 9)
    expect = torch.cat([5 * W, 4 * W2])
    se = c.std(0).clamp(min=1e-3) / math.sqrt(c.shape[0])
    assert bool(((c.mean(0) - expect).abs() < 5 * se + 1e-9).all()), (c.mean(0), expect)
    assert bool((c[:, :5].sum(1) == 5).all()) and bool((c[:, 5:].sum(1) == 4).all())


def test_low_variance_resamplers_beat_multinomial():
    var = {m: counts(m, 2000).var(0).sum().item() for m in METHODS}
    for m in ("stratified", "systematic", "residual"):
        assert var[m] < 0.6 * var["multinomial"], var


def test_ess_formula_and_weight_reset_keeps_normaliser():
    lw = torch.log(torch.tensor([1.0, 1.0, 2.0, 4.0, 3.0, 3.0], dtype=torch.float64))
    group = torch.tensor([0, 0, 0, 0, 1, 1])
    state = EulerAncestral().init(torch.zeros(6, 2, dtype=torch.float64), Sigmas(torch.tensor([1.0, 0.0])))
    p = Particles.start(state, group).reweight(lw)
    w = torch.tensor([1.0, 1.0, 2.0, 4.0])
    assert torch.allclose(p.ess(), torch.tensor([w.sum() ** 2 / (w ** 2).sum(), 2.0], dtype=torch.float64))
    assert torch.allclose(ess_from_log_w(lw[:4]), p.ess()[0])
    p2 = p.reweight(torch.log(torch.tensor([2.0, 1, 1, 1, 1, 1])))  # accumulates: weight 1 -> 2
    assert torch.allclose(p2.log_w.exp(), torch.tensor([2.0, 1, 2, 4, 3, 3], dtype=torch.float64))
    due = torch.tensor([True, False])
    r, _ = resample(p2, "systematic", torch.Generator().manual_seed(0), step=0, due=due)
    assert torch.allclose(r.log_w[:4].exp(), torch.full((4,), 9.0 / 4, dtype=torch.float64))  # mean weight
    assert torch.allclose(r.log_norm(), p2.log_norm())  # the normaliser estimate is kept
    assert torch.equal(r.state.particle[4:], p2.state.particle[4:])  # group 1 untouched


def test_trigger_ess_every_and_window():
    state = EulerAncestral().init(torch.zeros(4, 1, dtype=torch.float64), Sigmas(torch.tensor([1.0, 0.0])))
    p = Particles.start(state, torch.tensor([0, 0, 1, 1])).reweight(torch.tensor([0.0, -10.0, 0.0, 0.0]))
    assert Trigger(0.9).groups_due(p, 0, 1.0).tolist() == [True, False]
    assert Trigger(0.9, every=2).groups_due(p, 0, 1.0).tolist() == [False, False]
    assert Trigger(0.9, every=2).groups_due(p, 1, 1.0).tolist() == [True, False]
    assert Trigger(None, sigma_max=0.5).groups_due(p, 0, 1.0).tolist() == [False, False]
    assert Trigger(None, sigma_max=0.5).groups_due(p, 0, 0.4).tolist() == [True, True]


def test_fork_ids_fresh_reproducible_and_noise_differs():
    sig = Sigmas(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    state = EulerAncestral().init(torch.zeros(3, 2, dtype=torch.float64), sig)
    p = Particles.start(state)
    idx = torch.tensor([2, 2, 0])
    a, b = p.fork(idx, step=4), p.fork(idx, step=4)
    assert torch.equal(a.state.particle, b.state.particle)  # same seed/step -> same tree
    assert a.state.particle[0] != a.state.particle[1] and a.state.particle[2] == 0  # single copy keeps its id
    assert p.fork(idx, step=5).state.particle[0] != a.state.particle[0]
    assert torch.equal(a.lineage, idx) and child_index(idx).tolist() == [0, 1, 0]
    noise = NoiseSource(3)
    eps = noise.normal(a.state.particle, 1, (2,), dtype=torch.float64)
    assert not torch.allclose(eps[0], eps[1])  # siblings draw different noise
    assert torch.equal(eps, noise.normal(b.state.particle, 1, (2,), dtype=torch.float64))
    g1, g2 = resample_generator(7, 3), resample_generator(7, 3)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    assert not torch.equal(torch.rand(4, generator=resample_generator(7, 4)), torch.rand(4, generator=g1))


def test_budget_denoiser_chunks_and_counts_per_group():
    seen = []

    def fn(x, s):
        seen.append(x.shape[0])
        return x * 0

    from samplegraph.nodes.core.denoiser import FunctionDenoiser
    budget = Budget(groups=2)
    d = BudgetDenoiser(FunctionDenoiser(fn), budget, torch.tensor([0, 0, 0, 1, 1]), max_batch=2)
    out = d(torch.ones(5, 3), torch.ones(5))
    assert out.shape == (5, 3) and seen == [2, 2, 1]
    assert budget.calls == 1 and budget.chunks == 3 and budget.particle_nfe.tolist() == [3, 2]
    assert budget.report()["particle_nfe"] == 5


def test_smc_accepts_samplers_by_what_their_parameters_do():
    """The guard reads draws_noise from the instance: churned Heun steers, ancestral Euler with eta = 0 does not."""
    from samplegraph.graph.errors import NodeError
    from samplegraph.nodes.core.context import NodeContext
    from samplegraph.nodes.models.gmm import ModelGMM
    from samplegraph.nodes.rewards.linear import RewardLinear
    from samplegraph.nodes.samplers.heun import Heun
    from samplegraph.nodes.search.smc import Smc

    sigmas, reward, ctx = Sigmas.of([10.0, 3.0, 1.0, 0.0]), RewardLinear(a=[1.0, 0.0]).run(), NodeContext.detached()
    latent = 10.0 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = Smc(particles=4).run(ModelGMM().run(), sigmas, Heun(s_churn=1.0), latent, reward, ctx)
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    with pytest.raises(NodeError, match="draws noise"):
        Smc(particles=4).run(ModelGMM().run(), sigmas, EulerAncestral(eta=0.0), latent, reward, ctx)
