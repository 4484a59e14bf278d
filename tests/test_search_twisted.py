"""search.tds (twisted SMC, Wu et al. 2023) against the exact tilted GMM target p(x) exp(lam r(x)) / Z."""
from __future__ import annotations

import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.metrics.common import sliced_wasserstein
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture
from samplegraph.nodes.rewards.linear import RewardLinear
from samplegraph.nodes.rewards.reward import LinearReward
from samplegraph.nodes.rewards.tilt import tilted
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.nodes.search.tds import Tds

GMM = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.tensor([[0.5], [0.5]]), torch.tensor([0.5, 0.5]))
REWARD = RewardLinear(a=[1.0]).run()
LAM = 0.5  # exact tilt: modes at -1.875 and 2.125 with masses 0.119 and 0.881
SIGMAS = Karras(steps=30, sigma_min=0.01, sigma_max=20.0).run()


def latent(n: int, seed: int) -> torch.Tensor:
    return NoiseSource(seed).normal(torch.arange(n), -1, (1,), dtype=torch.float64) * 20.0  # (n, 1)


def tds(groups: int, n: int, seed: int = 1, **kw) -> tuple[torch.Tensor, NodeContext]:
    ctx = NodeContext.detached(seed=seed)
    x = Tds(particles=n, lam=LAM, **kw).run(GMM, SIGMAS, latent(groups * n, seed), REWARD, ctx)
    return x, ctx


def errors(x: torch.Tensor, q: GaussianMixture, ref: torch.Tensor) -> tuple[float, float]:
    """|mass of the + mode - exact| and SW2 to exact samples."""
    return (abs(float((x[:, 0] > 0).double().mean()) - float(q.weights[1])),
            sliced_wasserstein(x, ref, 4, torch.Generator().manual_seed(0)))


def test_twisted_converges_and_beats_the_prior_proposal():
    """One weighted draw per group: mode-mass error and SW2 shrink with N, are within tolerance at N=64, and the
    twisted proposal is much closer than the model's own proposal (same weights, same kernel) at N = 1 and 4."""
    q = tilted(GMM, REWARD, LAM)
    ref = q.sample(50_000, torch.Generator().manual_seed(9))
    twisted = {n: errors(tds(1000, n, keep="one")[0], q, ref) for n in (1, 4, 16, 64)}
    prior = {n: errors(tds(1000, n, keep="one", proposal="prior")[0], q, ref) for n in (1, 4)}
    # measured (seed 1), N = 1, 4, 16, 64: twisted err 0.092, 0.029, 0.001, 0.018; sw 0.85, 0.41, 0.11, 0.28
    #                                        prior   err 0.387, 0.076, 0.033, 0.005; sw 2.19, 0.77, 0.44, 0.13
    # from N=16 on the two are within the noise of 1000 samples (seed 2, N=16: sw twisted 0.16, prior 0.10)
    err, sw = ({n: v[i] for n, v in twisted.items()} for i in (0, 1))
    assert err[1] > err[4] and err[1] > err[16] and err[64] < 0.02, err
    # SW2 of 1000 draws is noisy: exact-vs-exact 0.06-0.37 over seeds 1-6, and N = 4, 16, 64 (0.18-0.41,
    # 0.11-0.32, 0.10-0.28) overlap even at 4000 groups; the mass error above is the precise statistic, SW2 only
    # has to show N=1 far off and the rest within the noise floor
    assert sw[1] > 1.5 * max(sw[4], sw[16], sw[64]) and sw[64] < 0.4, sw
    for n in (1, 4):  # SW2 only at N=1: at N=4 twisted's SW2 (0.18-0.41) is at the noise floor (seed 1: 0.41 / 0.77)
        sw_ok = n > 1 or twisted[n][1] < 0.5 * prior[n][1]
        assert twisted[n][0] < 0.5 * prior[n][0] and sw_ok, (n, twisted[n], prior[n])


@pytest.mark.parametrize("proposal", ["twisted", "prior"])
def test_budget_groups_and_reproducibility(proposal):
    ctx = NodeContext.detached(seed=5)
    _, p = Tds(particles=6, lam=2.0, proposal=proposal, ess_threshold=None).twist(
        GMM, SIGMAS, latent(24, 5), REWARD, ctx)
    assert torch.equal(p.lineage // 6, p.group)  # ancestors from the own group only
    per_step = 2 if proposal == "twisted" else 1  # the twist's backward pass costs one more evaluation
    assert ctx.metrics["nfe"] == 30 * per_step and ctx.metrics["particle_nfe"] == 30 * 24 * per_step
    assert ctx.metrics["reward_calls"] == 31 and ctx.metrics["resamplings"] == 4 * 30
    a, _ = tds(4, 6, seed=5, proposal=proposal, max_batch=7)
    assert torch.equal(a, tds(4, 6, seed=5, proposal=proposal)[0])
    assert not torch.equal(a, tds(4, 6, seed=6, proposal=proposal)[0])


def test_prior_proposal_without_resampling_leaves_weight_exp_lambda_r():
    """The twists telescope: with the model's proposal and no resampling each final log-weight is lam r(x0)."""
    ctx = NodeContext.detached(seed=3)
    _, p = Tds(particles=8, lam=LAM, proposal="prior", sigma_max=1e-9).twist(GMM, SIGMAS, latent(32, 3), REWARD, ctx)
    assert ctx.metrics["resamplings"] == 0
    assert torch.allclose(p.log_w, LAM * REWARD(p.state.x).double(), atol=1e-9)


class Detached(LinearReward):
    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        return super().__call__(x0).detach()


def test_non_differentiable_reward_is_rejected():
    with pytest.raises(NodeError, match="differentiable"):
        Tds(particles=2).run(GMM, SIGMAS, latent(4, 0), Detached([1.0]), NodeContext.detached(seed=0))
