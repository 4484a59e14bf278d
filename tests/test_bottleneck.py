"""sample.bottleneck (Bottleneck Sampling, Tian et al. 2025) on a small random DiT: one resolution
throughout is plain sampling bit for bit (any sampler, stochastic too); a high-low-high plan
re-noises the resized x0 estimate to lift x the boundary sigma with a re-spaced schedule, evaluates
the low stage at low resolution, and records its cost honestly."""
import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.accel.bottleneck import SampleBottleneck, respace
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import FunctionDenoiser
from samplegraph.nodes.core.noise import INITIAL_STEP
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.networks.dit import resize
from samplegraph.nodes.models.safetensors_model import mlp_model
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.euler_ancestral import EulerAncestral
from samplegraph.nodes.samplers.sample import Sample
from samplegraph.nodes.schedules.karras import Karras
from test_ras import random_dit


@pytest.fixture(scope="module")
def model():
    return ModelCondition(label=5).run(mlp_model(random_dit(1)))


def latent(n: int = 3, side: int = 16) -> torch.Tensor:
    return torch.randn(n, side, side, generator=torch.Generator().manual_seed(4)) * 80.0


@pytest.mark.parametrize("sampler", [Euler(), Dpmpp2M(), EulerAncestral()])
def test_full_resolution_everywhere_is_plain_sampling(model, sampler):
    sigmas = Sigmas(Karras(steps=9, sigma_min=0.002, sigma_max=80.0).run().values)
    ctx_a, ctx_b = NodeContext.detached(seed=3), NodeContext.detached(seed=3)
    plain = Sample(checkpoint_seconds=None).run(model, sigmas, sampler, latent(), ctx_a)
    ours = SampleBottleneck(sizes=[16, 16, 16], steps=[2, 5, 2], lift=2.0).run(model, sigmas, sampler, latent(), ctx_b)
    assert torch.equal(ours, plain)
    assert ctx_b.metrics["nfe"] == ctx_a.metrics["nfe"] and ctx_b.metrics["cost_fraction"] == 1.0


def test_high_low_high_renoises_the_resized_estimate_on_a_respaced_schedule():
    seen = []

    def fake(x, sigma):  # records what the sampler asks; x0 = 0.5 x / (1 + sigma) keeps it analytic
        seen.append((tuple(x.shape), float(sigma[0])))
        return x * 0.5 / (1 + sigma[:, None, None])

    sigmas = Sigmas(Karras(steps=6, sigma_min=0.002, sigma_max=80.0).run().values)
    ctx = NodeContext.detached(seed=7)
    node = SampleBottleneck(sizes=[16, 8, 16], steps=[2, 2, 2], lift=1.5)
    node.run(FunctionDenoiser(fake), sigmas, Euler(), latent(), ctx)
    assert [s for s, _ in seen] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 2 + [(3, 16, 16)] * 2
    v = sigmas.values
    assert seen[2][1] == pytest.approx(1.5 * float(v[2]))  # the low stage starts lifted
    assert seen[4][1] == pytest.approx(min(1.5 * float(v[4]), 80.0))
    assert torch.allclose(respace(1.5 * float(v[2]), float(v[4]), 2, 0.002)[-1], v[4].double())
    assert ctx.metrics["nfe"] == 6
    assert ctx.metrics["cost_fraction"] == pytest.approx((4 * 256 + 2 * 64) / (6 * 256))


def test_renoise_is_resize_plus_keyed_noise(model):
    sigmas = Sigmas(Karras(steps=4, sigma_min=0.002, sigma_max=80.0).run().values)
    ctx = NodeContext.detached(seed=11)
    node = SampleBottleneck(sizes=[16, 8, 16], steps=[1, 2, 1], lift=2.0)
    x0 = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    x, plan = node.renoise(x0, 8, sigmas.values, 1, 3, 1, ctx)
    eps = ctx.noise.normal(torch.arange(3), INITIAL_STEP - 1, (8, 8))
    assert torch.equal(x, resize(x0, 8) + 2.0 * float(sigmas.values[1]) * eps)
    assert plan[0] == pytest.approx(2.0 * float(sigmas.values[1])) and plan.numel() == 3


def test_plans_that_do_not_fit_are_refused(model):
    sigmas = Sigmas(Karras(steps=6, sigma_min=0.002, sigma_max=80.0).run().values)
    ctx = NodeContext.detached(seed=0)
    with pytest.raises(NodeError, match="add up to 5"):
        SampleBottleneck(sizes=[16, 8, 16], steps=[2, 2, 1]).run(model, sigmas, Euler(), latent(), ctx)
    with pytest.raises(NodeError, match="high-low-high"):
        SampleBottleneck(sizes=[8, 16, 8], steps=[2, 2, 2]).run(model, sigmas, Euler(), latent(), ctx)
    with pytest.raises(ValueError, match="one step count per stage"):
        SampleBottleneck(sizes=[16, 8, 16], steps=[3, 3])


def test_a_stateful_model_inside_is_refused_with_the_reason(model):
    from samplegraph.nodes.accel.ras import ModelRAS
    sigmas = Sigmas(Karras(steps=4, sigma_min=0.002, sigma_max=80.0).run().values)
    with pytest.raises(NodeError, match="directly to 'sample'"):
        SampleBottleneck(sizes=[16, 8, 16], steps=[1, 2, 1]).run(ModelRAS().run(model), sigmas, Euler(), latent(),
                                                                  NodeContext.detached(seed=0))
