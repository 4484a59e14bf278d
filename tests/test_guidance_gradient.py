"""Guidance through the x0 estimate on analytic models: reward-gradient (DPS) guidance against
finite differences and against the exact tilt of a Gaussian, coarse h-transform guidance against
the closed-form conditional denoiser of a Gaussian prior, identities, NFE and solver composition."""
import math

import pytest
import torch
from pydantic import ValidationError

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.api import Registry
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import CountingDenoiser
from samplegraph.nodes.guidance.coarse import CoarseGuidance
from samplegraph.nodes.guidance.reward_gradient import RewardGradient
from samplegraph.nodes.latents.noise import LatentNoise
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.rewards.reward import LinearReward
from samplegraph.nodes.samplers.sample import Sample
from samplegraph.nodes.schedules.karras import Karras

F64 = torch.float64
SOLVERS = ("euler", "heun", "dpmpp_2m", "euler_ancestral", "unipc")
A = [0.6, -0.8]


@pytest.fixture(scope="module")
def ring():
    return ModelCondition().run(ModelGMM(preset="ring", modes=8, std=0.4).run())


def gaussian(mu=(1.0, -0.5), s=0.7) -> GaussianMixture:
    return GaussianMixture(torch.tensor([mu], dtype=F64), torch.full((1, 2), s, dtype=F64), torch.ones(1, dtype=F64))


def noisy(n: int = 128, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.empty(n, dtype=F64).uniform_(math.log(0.01), math.log(80.0), generator=gen))  # (n,)
    return 3 * torch.randn(n, 2, dtype=F64, generator=gen) + sigma[:, None] * torch.randn(n, 2, dtype=F64,
                                                                                        generator=gen), sigma


def sample(denoise, solver: str = "heun", n: int = 2048, steps: int = 24) -> torch.Tensor:
    sigmas = Karras(steps=steps).run()
    ctx = NodeContext.detached(seed=0)
    latent = LatentNoise(batch=n, shape=[2], dtype="float64").run(sigmas, ctx)
    return Sample().run(denoise, sigmas, Registry.default(plugins=False).node_class(f"sampler.{solver}")(), latent, ctx)


def test_reward_gradient_matches_finite_differences_of_the_exact_denoiser(ring):
    """x0 + s sigma^2 grad_x r(D(x)); grad by central differences of the exact mixture denoiser."""
    x, sigma = noisy()
    reward, s, h = LinearReward(torch.tensor(A)), 0.5, 1e-6
    fd = torch.stack([(reward(ring(x + h * e, sigma)) - reward(ring(x - h * e, sigma))) / (2 * h)
                      for e in torch.eye(2, dtype=F64)], 1)  # (B, 2)
    out = RewardGradient(scale=s).run(ring, reward)(x, sigma)
    expect = ring(x, sigma) + s * sigma[:, None] ** 2 * fd
    assert ((out - expect).abs() / (1 + sigma[:, None] ** 2)).max() < 1e-6
    assert torch.equal(RewardGradient(scale=0.0).run(ring, reward)(x, sigma), ring(x, sigma))


def test_reward_gradient_is_the_exact_tilt_of_a_gaussian():
    """p(x0) exp(s a.x0) of N(mu, s_d^2 I) is N(mu + s s_d^2 a, s_d^2 I): its exact denoiser equals the guided one."""
    prior, s = gaussian(), 1.5
    a = torch.tensor(A, dtype=F64)
    tilted = gaussian(mu=tuple((torch.tensor([1.0, -0.5], dtype=F64) + s * 0.49 * a).tolist()))
    x, sigma = noisy()
    out = RewardGradient(scale=s).run(prior, LinearReward(a))(x, sigma)
    assert torch.allclose(out, tilted(x, sigma), atol=1e-10, rtol=1e-10)


def test_reward_rises_with_scale_for_every_solver(ring):
    """Linear reward a.x0 towards the top of the ring; the mean reward grows with the scale."""
    reward = LinearReward(torch.tensor([0.0, 1.0]))
    for solver in SOLVERS:
        means = [float(reward(sample(RewardGradient(scale=s).run(ring, reward), solver, n=512, steps=16)).mean())
                 for s in (0.0, 0.3, 1.0)]
        assert means[0] + 0.5 < means[1] < means[2], (solver, means)


def test_gradient_guidance_interval_and_nfe(ring):
    x, sigma = noisy()
    counted = CountingDenoiser(ring)
    guided = RewardGradient(scale=2.0, sigma_lo=0.5, sigma_hi=5.0).run(counted, LinearReward(torch.tensor(A)))
    out = guided(x, sigma)
    inside = (sigma > 0.5) & (sigma <= 5.0)
    assert torch.equal(out[~inside], ring(x, sigma)[~inside])
    assert torch.allclose(out[inside], RewardGradient(scale=2.0).run(ring, LinearReward(torch.tensor(A)))(
        x, sigma)[inside], atol=1e-12)
    assert counted.calls == 1 and guided.evaluations(sigma) == 2 and guided.evaluations(sigma[~inside]) == 1
    split = torch.cat([guided(x[:50], sigma[:50]), guided(x[50:], sigma[50:])])
    assert torch.allclose(split, out, atol=1e-12, rtol=0)


def exact_conditional(prior_mu, s_d, x, sigma, a, y, sigma_y):
    """E[x0 | x, y] for x0 ~ N(mu, s_d^2 I), x = x0 + sigma eps, y = a x0 + N(0, sigma_y^2): Gaussian conditioning."""
    r2 = s_d ** 2 * sigma ** 2 / (s_d ** 2 + sigma ** 2)  # (B,)
    d = (s_d ** 2 * x + sigma[:, None] ** 2 * prior_mu) / (s_d ** 2 + sigma[:, None] ** 2)  # (B, 2)
    gain = r2[:, None, None] * a.T / (sigma_y ** 2 + r2[:, None, None] * (a @ a.T))  # (B, 2, 1)
    return d + (gain @ (y - d @ a.T)[:, :, None])[..., 0]


def test_coarse_guidance_is_the_exact_conditional_denoiser_of_a_gaussian():
    prior = gaussian()
    a, y = torch.tensor([[1.0, 0.5]], dtype=F64), torch.tensor([0.7], dtype=F64)
    node = CoarseGuidance(target=[0.7], matrix=[[1.0, 0.5]], sigma_y=0.3, data_std=0.7)
    for level in (0.01, 0.3, 50.0):
        x, _ = noisy(64, seed=int(level * 100))
        sigma = torch.full((64,), level, dtype=F64)
        expect = exact_conditional(torch.tensor([1.0, -0.5], dtype=F64), 0.7, x, sigma, a, y, 0.3)
        assert torch.allclose(node.run(prior)(x, sigma), expect, atol=1e-10, rtol=1e-10), level
    assert not torch.allclose(node.run(prior)(x, sigma), prior(x, sigma))


def test_coarse_guidance_pools_images_and_pulls_samples_to_the_target(ring):
    """Pooling: A A^T = I / k^2; on the ring, samples' A x0 move to the target as the drift is switched on."""
    img = torch.randn(3, 2, 4, 4, dtype=F64, requires_grad=False)
    ax, gram = CoarseGuidance(target=[0.0] * 8, factor=2).observe(img)
    assert torch.allclose(ax, torch.nn.functional.avg_pool2d(img, 2).reshape(3, 8))
    assert torch.allclose(gram, torch.eye(8, dtype=F64) / 4)
    errs = []
    for scale in (0.0, 0.5, 1.0):
        node = CoarseGuidance(target=[0.9], matrix=[[0.6, 0.8]], sigma_y=0.1, data_std=1.0, scale=scale)
        errs.append(float(((sample(node.run(ring), n=512) @ torch.tensor([0.6, 0.8], dtype=F64)) - 0.9).abs().mean()))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.2, errs
    node = CoarseGuidance(target=[0.9], matrix=[[0.6, 0.8]], sigma_y=0.1, data_std=1.0)
    # 16 steps leave a discretisation error: mean |A x0 - y| at 8192 samples is euler 0.262, heun 0.123,
    # dpmpp_2m 0.164, euler_ancestral 0.238, unipc 0.143 (no guidance: 2.5-2.7); at 1024 samples its standard
    # error is about 0.01 (seeds 0-7: euler 0.252-0.285), so 0.3 is the worst solver plus 4 standard errors
    for solver in SOLVERS:
        err = float(((sample(node.run(ring), solver, n=1024, steps=16) @ torch.tensor([0.6, 0.8], dtype=F64)) - 0.9)
                    .abs().mean())
        assert err < 0.3, (solver, err)


def test_coarse_guidance_errors_name_the_field(ring):
    with pytest.raises(ValidationError, match="exactly one of 'factor'"):
        CoarseGuidance(target=[1.0])
    with pytest.raises(ValidationError, match="'matrix' has 1 rows"):
        CoarseGuidance(target=[1.0, 2.0], matrix=[[1.0, 0.0]])
    x, sigma = noisy(4)
    with pytest.raises(NodeError, match="'factor' 2 needs samples"):
        CoarseGuidance(target=[1.0], factor=2).run(ring)(x, sigma)
    with pytest.raises(NodeError, match="matrix' rows have 3 numbers"):
        CoarseGuidance(target=[1.0], matrix=[[1.0, 0.0, 0.0]]).run(ring)(x, sigma)


def test_a_reward_without_gradient_is_a_clear_error(ring):
    class Detached(LinearReward):
        def __call__(self, x0):
            return super().__call__(x0).detach()

    x, sigma = noisy(4)
    with pytest.raises(NodeError, match="differentiable reward"):
        RewardGradient().run(ring, Detached(torch.tensor(A)))(x, sigma)
