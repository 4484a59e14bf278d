"""search.fkc (Feynman-Kac correctors) against exact products, geometric means and powers of Gaussian mixtures."""
from __future__ import annotations

import pytest
import torch
from search_targets import aligned_power, product_mixture

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.metrics.common import sliced_wasserstein
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.nodes.search.fkc import Fkc

SIGMA_MAX = 40.0
SEED = 1
SIGMAS = Karras(steps=100, sigma_min=0.01, sigma_max=SIGMA_MAX).run()
ONE = torch.tensor([[0.5], [0.5]])
COND = GaussianMixture(torch.tensor([[-2.0], [2.0]]), ONE, torch.tensor([0.3, 0.7]))  # "conditional"
UNCOND = GaussianMixture(torch.tensor([[-2.0], [2.0]]), ONE, torch.tensor([0.5, 0.5]))
WIDE = GaussianMixture(torch.tensor([[-2.0], [2.0]]), 2 * ONE, torch.tensor([0.5, 0.5]))
EXPERT = GaussianMixture(torch.tensor([[1.0]]), torch.tensor([[1.5]]), torch.tensor([1.0]))
# target kind, beta, p1, p2, exact target (mode masses: anneal 0.155 / 0.845, CFG 0.073 / 0.927)
CASES = {
    "anneal": ("anneal", 2.0, COND, None, aligned_power([COND], [2.0])),
    "geometric": ("geometric", 3.0, COND, UNCOND, aligned_power([COND, UNCOND], [3.0, -2.0])),
    "product": ("product", None, WIDE, EXPERT, product_mixture(WIDE, EXPERT)),
}


def latent(n: int, seed: int) -> torch.Tensor:
    return NoiseSource(seed).normal(torch.arange(n), -1, (1,), dtype=torch.float64) * SIGMA_MAX  # (n, 1)


def corrector(case: str, **kw) -> Fkc:
    target, beta = CASES[case][:2]
    return Fkc(target=target, **({} if target == "product" else {"beta": beta}), **kw)


def fkc(case: str, groups: int, n: int, seed: int = 1, **kw) -> tuple[torch.Tensor, NodeContext]:
    p1, p2 = CASES[case][2:4]
    ctx = NodeContext.detached(seed=seed)
    x = corrector(case, particles=n, **kw).run(p1, SIGMAS, latent(groups * n, seed), ctx, p2)
    return x, ctx


def moments(q: GaussianMixture) -> tuple[float, float]:
    """Exact mean and std of a 1-D mixture."""
    m = float((q.weights[:, None] * q.means).sum())
    return m, float((q.weights[:, None] * (q.stds ** 2 + q.means ** 2)).sum() - m ** 2) ** 0.5


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_targets_match_quadrature(case):
    """The closed-form targets equal p1^a p2^b normalised on a fine grid: total variation below 1e-4 (product:
    exact; aligned_power neglects cross terms between modes 4 apart, the largest near x = 0 for 'geometric')."""
    p1, p2, q = CASES[case][2:]
    a, b = corrector(case).exponents()
    grid = torch.linspace(-12, 12, 48_001, dtype=torch.float64)[:, None]  # (M, 1)
    log_f = a * p1.log_prob(grid) + (b * p2.log_prob(grid) if p2 is not None else 0.0)  # (M,)
    f = torch.exp(log_f - log_f.max())
    dx = float(grid[1, 0] - grid[0, 0])
    tv = 0.5 * float((q.log_prob(grid).exp() - f / (f.sum() * dx)).abs().sum()) * dx
    assert tv < 1e-4, tv


@pytest.mark.parametrize("case", sorted(CASES))
def test_converges_to_exact_target_and_naive_sampler_is_wrong(case):
    """51200 particles split into groups of N. The errors of the weighted mean and std (per-group normalised
    weights, all particles) are within 0.05 at N=64 while the unweighted SDE with the same combined score (N=1:
    weights never act) is off by more than 0.06; SW2 of the resampled particles to exact samples of the target
    is also lower at N=64 than at N=1."""
    p1, p2, q = CASES[case][2:]
    ref = q.sample(50_000, torch.Generator().manual_seed(9))
    mean, std = moments(q)  # anneal 1.38, 1.49; geometric 1.71, 1.09; product 1.07, 1.26
    sw, err = {}, {}
    for n in (1, 64):
        ctx = NodeContext.detached(seed=SEED)
        x, p = corrector(case, particles=n).correct(p1, SIGMAS, latent(51200, SEED), ctx, p2)
        w, v = p.normalised() / (51200 // n), p.state.x[:, 0].double()  # (B,) weights summing to 1, (B,)
        mu = float((w * v).sum())
        err[n] = max(abs(mu - mean), abs(float((w * v * v).sum() - mu ** 2) ** 0.5 - std))
        sw[n] = sliced_wasserstein(x, ref, 4, torch.Generator().manual_seed(0))
    assert torch.equal(fkc(case, 4, 1, weighted=False)[0], fkc(case, 4, 1)[0])  # N=1 is the naive sampler
    # Both sides are biases that must stand out of the estimators' noise, hence 51200 particles (from 12800,
    # seeds 1-8 failed 2/8 for anneal and 3/8 for product). Measured moment error over seeds 1-8, N=1: anneal
    # 0.068-0.082 (its std 0.07 too small), geometric ~0.08, product ~0.23; N=64: anneal 0.012-0.052 (weights
    # must widen the naive sampler's too narrow modes: the hardest case, heavy-tailed over seeds, seed 7 0.052),
    # product 0.018-0.037. Unweighted N=64 (weighted=False), anneal: 0.056-0.082, fails. SW2 (seed 1) N=1 / 64:
    # anneal 0.32 / 0.17, geometric 0.21 / 0.07, product 0.29 / 0.04.
    assert err[1] > 0.06 and err[64] < 0.05 and err[64] < err[1] - 0.02, err
    assert sw[64] < sw[1] and sw[64] < 0.3, sw


@pytest.mark.parametrize("target", ["anneal", "geometric"])
def test_beta_one_has_zero_weight_increments(target):
    """p^1 and p1^1 p2^0 are the model itself: g = (|S|^2 - |S|^2) / 2 = 0 exactly, so no reweighting or resampling."""
    ctx = NodeContext.detached(seed=2)
    _, p = Fkc(target=target, beta=1.0, particles=4).correct(COND, SIGMAS, latent(16, 2), ctx, UNCOND)
    assert ctx.metrics["resamplings"] == 0 and torch.equal(p.log_w, torch.zeros(16, dtype=torch.float64))


def test_budget_groups_and_reproducibility():
    """Two models cost 2 NFE per step on every particle; ancestors stay in their group; chunking and reruns
    do not change the samples; another seed does."""
    ctx = NodeContext.detached(seed=5)
    _, p = Fkc(target="product", particles=6, ess_threshold=None).correct(WIDE, SIGMAS, latent(24, 5), ctx, EXPERT)
    assert torch.equal(p.lineage // 6, p.group)
    assert ctx.metrics["nfe"] == 200 and ctx.metrics["particle_nfe"] == 200 * 24
    assert ctx.metrics["particle_nfe_per_group"] == [200 * 6] * 4 and ctx.metrics["resamplings"] == 4 * 99
    a, _ = fkc("product", 4, 6, seed=5, max_batch=7)
    assert torch.equal(a, fkc("product", 4, 6, seed=5)[0])
    assert not torch.equal(a, fkc("product", 4, 6, seed=6)[0])


def test_bad_inputs_and_parameters_are_named():
    with pytest.raises(NodeError, match="denoise2"):
        Fkc(target="product").run(WIDE, SIGMAS, latent(8, 0), NodeContext.detached(seed=0))
    with pytest.raises(ValueError, match="'beta' is not used by target 'product'"):
        Fkc(target="product", beta=2.0)
    with pytest.raises(ValueError, match="a \\+ b <= 0"):
        Fkc(target="anneal", beta=-1.0)
