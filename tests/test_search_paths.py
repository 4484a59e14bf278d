"""Budget stopping (best_of_n max_nfe), search.beam, search.zero_order and search.paths as optimisers on the GMM."""
from __future__ import annotations

import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture
from samplegraph.nodes.rewards.quadratic import RewardQuadratic
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.euler_ancestral import EulerAncestral
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.nodes.search.beam import Beam
from samplegraph.nodes.search.best_of_n import BestOfN
from samplegraph.nodes.search.paths import Paths
from samplegraph.nodes.search.zero_order import ZeroOrder

GMM = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]), torch.full((3, 2), 0.5),
                      torch.tensor([0.4, 0.4, 0.2]))
SIGMAS = Karras(steps=20, sigma_min=0.01, sigma_max=20.0).run()
REWARD = RewardQuadratic(center=[1.0, 1.5], scale=1.0).run()  # r_max = 0, between two modes


def latent(n: int, seed: int) -> torch.Tensor:
    return NoiseSource(seed).normal(torch.arange(n), -1, (2,), dtype=torch.float64) * 20.0  # (n, 2)


def plain(lat: torch.Tensor, sampler: Sampler | None = None) -> torch.Tensor:
    sampler = sampler or EulerAncestral()
    return run_steps(sampler, GMM, sampler.init(lat, SIGMAS), NodeContext.detached(seed=0).noise).x


def test_best_of_n_stops_adding_candidates_at_the_nfe_budget():
    lat = latent(50 * 16, 0)
    full = BestOfN(n=16).run(GMM, SIGMAS, EulerAncestral(), lat, REWARD, NodeContext.detached(seed=0))
    rounds = BestOfN(n=16, per_round=4).run(GMM, SIGMAS, EulerAncestral(), lat, REWARD, NodeContext.detached(seed=0))
    assert torch.equal(full, rounds)  # rounds draw the same noise as one batch
    ctx = NodeContext.detached(seed=0)  # one candidate costs 20 NFE: 4 rounds of 4 would be 320
    x = BestOfN(n=16, per_round=4, max_nfe=8 * 20 + 5).run(GMM, SIGMAS, EulerAncestral(), lat, REWARD, ctx)
    assert ctx.metrics["candidates"] == 8 and ctx.metrics["particle_nfe_per_group"] == [160] * 50
    assert ctx.metrics["nfe"] == 2 * 20
    runs = plain(lat).reshape(50, 16, 2)[:, :8]  # the budget-limited pick is the argmax of the first 8 columns
    assert torch.equal(x, runs[torch.arange(50), REWARD(runs.reshape(-1, 2)).reshape(50, 8).argmax(1)])
    tight = NodeContext.detached(seed=0)  # a budget below one round still runs the first round
    BestOfN(n=16, per_round=4, max_nfe=1).run(GMM, SIGMAS, EulerAncestral(), lat, REWARD, tight)
    assert tight.metrics["candidates"] == 4
    assert float(REWARD(x).mean()) < float(REWARD(full).mean())  # fewer candidates: a worse best


def beam(k: int, m: int, groups: int = 100, seed: int = 0, **kw) -> tuple[torch.Tensor, NodeContext]:
    ctx = NodeContext.detached(seed=seed)
    return Beam(beams=k, children=m, **kw).run(GMM, SIGMAS, EulerAncestral(), latent(groups * k, seed), REWARD,
                                               ctx), ctx


def test_beam_best_reward_improves_with_beams_and_children():
    r = {}
    for k, m in ((1, 1), (1, 4), (4, 1), (4, 4), (8, 8)):
        x, ctx = beam(k, m)
        assert x.shape == (100, 2)
        r[k, m] = float(REWARD(x).mean())
        # one step call + one Tweedie call per step (none at sigma 0): 20 + 19 batched calls
        assert ctx.metrics["nfe"] == 39 and ctx.metrics["particle_nfe"] == 100 * k * m * 39
    # measured: -3.26, -0.059, -1.08, -4.5e-4, -1.6e-6 (r_max = 0)
    assert r[1, 1] < r[4, 1] - 1.0 and r[1, 1] < r[1, 4] - 2.0, r
    assert r[4, 1] < r[4, 4] and r[1, 4] < r[4, 4] < r[8, 8] and r[8, 8] > -1e-4, r
    # exact small cases: K=1, M=1 is a plain run; M=1 keeps every beam, so it is best-of-K
    assert torch.equal(beam(1, 1)[0], plain(latent(100, 0)))
    bon = BestOfN(n=4).run(GMM, SIGMAS, EulerAncestral(), latent(400, 0), REWARD, NodeContext.detached(seed=0))
    assert torch.equal(beam(4, 1)[0], bon)


def test_beam_groups_are_isolated_and_chunking_is_invisible():
    lat = latent(4 * 6, 3)
    ctx = NodeContext.detached(seed=3)
    a = Beam(beams=4, children=3).run(GMM, SIGMAS, EulerAncestral(), lat, REWARD, ctx)
    other = lat.clone()
    other[:4] = latent(4, 99)  # change group 0's noise only
    b = Beam(beams=4, children=3, max_batch=5).run(GMM, SIGMAS, EulerAncestral(), other, REWARD,
                                                  NodeContext.detached(seed=3))
    assert torch.equal(a[1:], b[1:]) and not torch.equal(a[0], b[0])
    with pytest.raises(NodeError, match="draws noise"):
        Beam(beams=2, children=2).run(GMM, SIGMAS, Euler(), latent(4, 0), REWARD, NodeContext.detached(seed=0))


def zero_order(seed: int = 0, groups: int = 100, sampler: Sampler | None = None,
               **kw: object) -> tuple[torch.Tensor, NodeContext]:
    ctx = NodeContext.detached(seed=seed)
    x = ZeroOrder(**kw).run(GMM, SIGMAS, sampler or Euler(), latent(groups, seed), REWARD, ctx)
    return x, ctx


def test_zero_order_improves_with_iterations_and_stops_on_budget():
    r = {}
    for it in (0, 1, 4, 16):
        x, ctx = zero_order(candidates=4, iterations=it, radius=0.3)
        r[it] = float(REWARD(x).mean())
        trace = ctx.metrics["best_reward_trace"]
        assert len(trace) == it + 1 and all(a <= b for a, b in zip(trace, trace[1:]))  # the pivot never worsens
        assert ctx.metrics["particle_nfe"] == 100 * 20 * (1 + 4 * it) and trace[-1] == pytest.approx(r[it])
    # measured: -3.00, -2.35, -0.72, -0.046; random search (radius 1) at 16 iterations: -0.168
    assert r[0] < r[1] - 0.3 and r[1] < r[4] - 1.0 and r[4] < r[16] - 0.5 and r[16] > -0.1, r
    assert float(REWARD(zero_order(candidates=4, iterations=16, radius=1.0)[0]).mean()) < r[16] - 0.05
    # exact small cases: no iterations is a plain run; a budget of 2 iterations is 2 iterations
    assert torch.equal(zero_order(iterations=0)[0], plain(latent(100, 0), Euler()))
    capped, ctx = zero_order(candidates=4, iterations=16, max_nfe=20 + 2 * 80 + 79)
    assert ctx.metrics["iterations_run"] == 2 and torch.equal(capped, zero_order(candidates=4, iterations=2)[0])


def paths(n: int, m: int, sampler: Sampler | None = None, groups: int = 100, seed: int = 0,
          **kw: object) -> tuple[torch.Tensor, NodeContext]:
    ctx = NodeContext.detached(seed=seed)
    x = Paths(n=n, branches=m, **kw).run(GMM, SIGMAS, sampler or EulerAncestral(), latent(groups * n, seed),
                                         REWARD, ctx)
    return x, ctx


def test_paths_best_reward_improves_with_n_and_branches():
    r = {}
    for n, m in ((1, 1), (4, 1), (4, 4), (8, 8)):
        x, ctx = paths(n, m, Euler())
        r[n, m] = float(REWARD(x).mean())
        # start=5, back=2, forward=4: rounds branch at steps 5, 7, ..., 19 and run 7 x 4 + 3 steps, then a
        # Tweedie call (not after the last round, which ends at sigma 0); the first 5 steps run N paths only
        assert ctx.metrics["rounds"] == 8 and ctx.metrics["nfe"] == 5 + 31 + 7
        assert ctx.metrics["particle_nfe"] == 100 * n * 5 + 100 * n * m * (31 + 7)
    # measured (Euler): -3.25, -1.17, -0.039, -3.9e-4
    assert r[1, 1] < r[4, 1] - 1.0 and r[4, 1] < r[4, 4] - 0.5 and r[4, 4] < r[8, 8] and r[8, 8] > -0.01, r


def test_paths_exact_small_cases_and_group_isolation():
    # no re-noising (back=0) and one branch: the paths are plain runs, so the result is best-of-N
    bon = BestOfN(n=4).run(GMM, SIGMAS, EulerAncestral(), latent(40, 0), REWARD, NodeContext.detached(seed=0))
    assert torch.equal(paths(4, 1, groups=10, back=0)[0], bon)
    a = paths(3, 3, groups=5, seed=2)[0]
    lat = latent(15, 2)
    lat[3:6] = latent(3, 50)  # change group 1's noise only
    b = Paths(n=3, branches=3, max_batch=4).run(GMM, SIGMAS, EulerAncestral(), lat, REWARD,
                                                NodeContext.detached(seed=2))
    assert torch.equal(a[[0, 2, 3, 4]], b[[0, 2, 3, 4]]) and not torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="must exceed back"):
        Paths(back=3, forward=3)
