"""sampler.amo: c = 0 is Euler bit for bit; with overshooting (c > 0) the sampler keeps the marginals, so the
analytic mixture seen as a rectified-flow velocity network (model.gmm, parametrisation 'flow') on its own
uniform flow-time grid (schedule.normal) is sampled with the right mode weights and variances at many steps,
and the variance bias shrinks with the step count."""
import pytest
import torch

from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.amo import Amo, overshoot_sigma
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.schedules.normal import Normal
from test_sde_distribution import D, N, STD, mode_stats

FLOW = ModelGMM(preset="custom", means=[[6.0, 0, 0, 0], [-6.0, 0, 0, 0], [0, 6.0, 0, 0]], std=STD,
                weights=[0.5, 0.3, 0.2], parametrisation="flow").run()  # test_sde_distribution's MODEL, as velocity

F64 = torch.float64


def flow_grid(steps: int, s_max: float = 0.995) -> Sigmas:
    """Uniform in rectified-flow time s = sigma / (1 + sigma), as flow models are sampled, ending at 0."""
    s = torch.linspace(s_max, 0, steps + 1, dtype=F64)  # (S+1,)
    return Sigmas(s / (1 - s))


def sample(sampler, steps: int, model=FLOW, n: int = N) -> torch.Tensor:
    sigmas = Normal(steps=steps).run(model)  # uniform in the flow model's time, sigma 999 -> 0
    x = sigmas.sigma_max * NoiseSource(1).normal(torch.arange(n), -1, (D,), dtype=F64)  # (N, D)
    return run_steps(sampler, model, sampler.init(x, sigmas), NoiseSource(0)).x


def test_c_zero_is_euler_bit_for_bit():
    model = ModelGMM().run()
    sigmas = flow_grid(12)
    x = sigmas.sigma_max * NoiseSource(3).normal(torch.arange(64), -1, (2,), dtype=torch.float32)  # (64, 2)
    ours, euler = Amo(c=0.0), Euler()
    assert not ours.draws_noise
    got = run_steps(ours, model, ours.init(x, sigmas), NoiseSource(0)).x
    assert torch.equal(got, run_steps(euler, model, euler.init(x, sigmas), NoiseSource(0)).x)


def test_overshoot_level_in_flow_time():
    sigma, nxt = torch.tensor([3.0], dtype=F64), torch.tensor([1.0], dtype=F64)  # s = 0.75 -> 0.5
    assert float(overshoot_sigma(sigma, nxt, 0.0)) == pytest.approx(1.0, rel=1e-15)
    assert float(overshoot_sigma(sigma, nxt, 1.0)) == pytest.approx(1 / 3, rel=1e-14)  # o = 0.25
    assert float(overshoot_sigma(sigma, nxt, 5.0)) == 0.0  # clamped at the data end


@pytest.mark.parametrize("c", [0.5, 2.0])
def test_mode_weights_and_variances_at_many_steps(c):
    tv, ratio = mode_stats(sample(Amo(c=c), 200))
    assert tv < 0.03, tv
    assert ((ratio - 1).abs() < 0.10).all(), ratio


def test_variance_bias_shrinks_with_steps():
    """Gaussian data N(0, 0.5^2): the final variance error (overshooting amplifies Euler's) falls ~ 1 / steps."""
    model = ModelGMM(preset="custom", means=[[0.0] * D], std=0.5, weights=[1.0], parametrisation="flow").run()
    errors = [abs(float(sample(Amo(c=2.0), n, model, 8192).var(0).mean()) / 0.25 - 1) for n in (10, 40, 320)]
    assert errors[0] > 2 * errors[1] > 4 * errors[2] and errors[2] < 0.05, errors
