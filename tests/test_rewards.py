"""Rewards (batched, order-preserving, differentiable, bounded) and the exact tilted GMM targets."""
from __future__ import annotations

import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture
from samplegraph.nodes.rewards.linear import RewardLinear
from samplegraph.nodes.rewards.quadratic import RewardQuadratic
from samplegraph.nodes.rewards.tilt import tilted

GMM = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]]),
                      torch.tensor([[0.5, 0.7], [0.6, 0.4], [0.8, 0.5]]), torch.tensor([0.5, 0.3, 0.2]))
REWARDS = [(RewardLinear(a=[1.0, -0.5], b=2.0).run(), 0.7), (RewardQuadratic(center=[1.0, 2.0], scale=1.5).run(), 1.3)]


def test_rewards_are_batched_order_preserving_differentiable():
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    lin, quad = REWARDS[0][0], REWARDS[1][0]
    assert torch.allclose(lin(x), x @ torch.tensor([1.0, -0.5], dtype=torch.float64) + 2.0)
    assert torch.allclose(lin(x.flip(0)), lin(x).flip(0)) and torch.allclose(quad(x[2:5]), quad(x)[2:5])
    quad(x).sum().backward()
    c = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert torch.allclose(x.grad, -(x.detach() - c) / 1.5 ** 2)
    assert quad.r_max == 0.0 and float(quad(c[None])) == 0.0 and lin.r_max is None
    with pytest.raises(NodeError, match="3 numbers"):
        RewardLinear(a=[1.0, 2.0, 3.0]).run()(x)


@pytest.mark.parametrize("reward,lam", REWARDS)
def test_tilted_density_is_p_times_exp_lambda_r(reward, lam):
    """log q(x) - log p(x) - lam r(x) is one constant (-log Z) everywhere: the tilt is exact."""
    q = tilted(GMM, reward, lam)
    x = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    diff = q.log_prob(x) - GMM.log_prob(x) - lam * reward(x)
    assert float(diff.max() - diff.min()) < 1e-9


@pytest.mark.parametrize("reward,lam", REWARDS)
def test_tilted_matches_importance_sampling(reward, lam):
    """Self-normalised importance sampling of exact p-samples with weights exp(lam r) reproduces the
    tilted mixture's mean, covariance and mode masses (within Monte Carlo error)."""
    gen = torch.Generator().manual_seed(2)
    x = GMM.sample(200_000, gen)  # (N, 2)
    w = torch.softmax(lam * reward(x), 0)  # (N,)
    q = tilted(GMM, reward, lam)
    y = q.sample(200_000, torch.Generator().manual_seed(3))
    assert torch.allclose((w[:, None] * x).sum(0), y.mean(0), atol=0.03)
    centred = x - (w[:, None] * x).sum(0)  # (N, 2)
    cov_is = (w[:, None, None] * centred[:, :, None] * centred[:, None]).sum(0)  # (2, 2)
    assert torch.allclose(cov_is, torch.cov(y.T), atol=0.06)
    mode = lambda z: torch.cdist(z, GMM.means).argmin(1)  # noqa: E731
    mass_is = torch.zeros(3, dtype=torch.float64).index_add(0, mode(x), w)
    mass_q = torch.bincount(mode(y), minlength=3).to(torch.float64) / y.shape[0]
    assert torch.allclose(mass_is, mass_q, atol=0.01), (mass_is, mass_q)
