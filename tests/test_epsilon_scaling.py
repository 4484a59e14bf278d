"""guidance.epsilon_scaling (Ning et al. 2024): lambda = 1 is the identity bit for bit, the scaled x0
estimate is x - sigma eps / (k t + b) with t the model's network time (checked by hand on model.gmm,
VE and discrete-VP), and samplers driven by the scaled model keep the conformance properties."""
import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.denoiser import CountingDenoiser
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.core.state import State
from samplegraph.nodes.guidance.epsilon_scaling import EpsilonScaling
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.dpmpp_sde import DpmppSde
from samplegraph.nodes.samplers.hb import HeavyBall
from samplegraph.nodes.samplers.heun import Heun
from test_sampler_conformance import NOISE, SIGMAS, advance, solve, start

F64 = torch.float64


def batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sigma = torch.exp(torch.empty(n, dtype=F64).uniform_(-3, 4, generator=g))  # (n,) 0.05 .. 55
    return torch.randn(n, 2, generator=g, dtype=F64) * (1 + sigma[:, None]), sigma


def test_lambda_one_is_the_identity_exactly():
    model, (x, sigma) = ModelGMM().run(), batch()
    torch.testing.assert_close(EpsilonScaling().run(model)(x, sigma), model(x, sigma), rtol=0, atol=0)
    # a linear schedule that passes through 1 at sigma = 2 (VE time t = sigma): that row is D itself
    sigma = torch.tensor([2.0, 3.0], dtype=F64)
    out = EpsilonScaling(k=-0.25, b=1.5).run(model)(x[:2], sigma)
    assert torch.equal(out[0], model(x[:2], sigma)[0]) and not torch.equal(out[1], model(x[:2], sigma)[1])


@pytest.mark.parametrize("params", [{"parametrisation": "x0_ve"},
                                    {"parametrisation": "eps_discrete_vp", "beta_start": 0.0001, "beta_end": 0.02}])
@pytest.mark.parametrize("k, b", [(0.0, 1.005), (0.3, 1.01), (1e-4, 1.002)])
def test_scaled_estimate_is_the_formula_by_hand(params, k, b):
    model, (x, sigma) = ModelGMM(**params).run(), batch(seed=1)
    t = model.sampling.timestep(sigma)  # (n,) VE: sigma; discrete VP: the timestep 0..999
    eps = (x - model(x, sigma)) / sigma[:, None]  # (n, 2) the network's noise estimate
    by_hand = x - sigma[:, None] * eps / (k * t + b)[:, None]  # (n, 2)
    torch.testing.assert_close(EpsilonScaling(k=k, b=b).run(model)(x, sigma), by_hand, rtol=1e-12, atol=1e-12)


def test_scaled_model_keeps_the_parametrisation_and_cost():
    model = ModelGMM(parametrisation="eps_discrete_vp").run()
    scaled = EpsilonScaling(b=1.01).run(model)
    assert scaled.sampling is model.sampling
    counted = CountingDenoiser(scaled)
    run_steps(Heun(), counted, Heun().init(start(), SIGMAS), NOISE)
    assert counted.calls == 2 * SIGMAS.steps - 1


def test_non_positive_lambda_is_an_error():
    with pytest.raises(NodeError, match="k t \\+ b"):
        EpsilonScaling(k=-0.1, b=1.0).run(ModelGMM().run())(*batch())


SAMPLERS = [Heun(), Dpmpp2M(), HeavyBall(), DpmppSde()]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: s.__node_kind__)
def test_samplers_on_the_scaled_model_keep_the_conformance_properties(sampler):
    """Deterministic, batch-split and order invariant, gather/continue, mixed noise levels in one step."""
    scaled = EpsilonScaling(k=0.002, b=1.01).run(ModelGMM().run())
    x = start(6)
    whole = solve(sampler, x, scaled).x
    assert torch.equal(whole, solve(sampler, x, scaled).x)
    assert not torch.equal(whole, solve(sampler, x).x)  # the scaling changes the result
    singles = torch.cat([solve(sampler, x[i:i + 1], scaled, particle=torch.tensor([i])).x for i in range(6)])
    torch.testing.assert_close(singles, whole, rtol=1e-12, atol=1e-12)
    perm = torch.tensor([3, 5, 0, 1, 4, 2])
    torch.testing.assert_close(solve(sampler, x[perm], scaled, particle=perm).x, whole[perm], rtol=1e-12, atol=1e-12)
    mid = advance(sampler, sampler.init(x, SIGMAS), 3, scaled)
    idx = torch.tensor([4, 0, 0, 2])
    torch.testing.assert_close(advance(sampler, mid[idx], 3, scaled).x, advance(sampler, mid, 3, scaled).x[idx],
                               rtol=1e-12, atol=1e-12)
    late, early = advance(sampler, mid[:3], 2, scaled), advance(sampler, mid[3:], 0, scaled)
    mixed = sampler.step(scaled, State.cat([late, early]), NOISE)
    apart = State.cat([sampler.step(scaled, late, NOISE), sampler.step(scaled, early, NOISE)])
    torch.testing.assert_close(mixed.x, apart.x, rtol=1e-12, atol=1e-12)
