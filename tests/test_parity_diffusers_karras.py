"""Parity with diffusers' Karras-sigma schedulers over whole trajectories (float32), and which network
time each one feeds the model.

With use_karras_sigmas, diffusers' set_timesteps maps each Karras sigma to a timestep by log-sigma
interpolation of the training table. DPMSolverMultistepScheduler then rounds it to an integer (so do
DPMSolverSinglestep, DEIS, UniPC, KDPM2 and SA-Solver); EulerDiscreteScheduler keeps the interpolated
value, cast to float32 (so do Heun, LMS and DPMSolverSDE). Either way the update itself uses the
unrounded sigma. Our NetworkDenoiser offers both times: timestep="rounded" (the nearest table entry)
and "continuous"; the sampler only sees sigmas.

Both sides call one perfectly trained eps network of the GMM in VP space (ExactNetwork: it reads
sigma off the time it is given through the model's own table, as a trained network would). diffusers
is driven as its pipelines do (x = noise * init_noise_sigma; per timestep
step(net(scale_model_input(x, t), t), t, x)); ours run model.gmm (eps_discrete_vp, SD's betas) on
the scheduler's own sigmas from the same noise. Asserted: median and 99.9th percentile of the
per-sample distance < 1e-4 with the matching time, and a median over 100x larger with the other one.
Measured (2000 samples): matching 0.7e-6-1.0e-6 median, 4e-6-9e-6 at the 99.9th percentile;
mismatched 0.7e-3-1.2e-3 median."""
import pytest
import torch

from peers import diffusers
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.exact_network import ExactNetwork
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)  # model.gmm's defaults too
N = 2000
NOISE = torch.randn(N, 2, generator=torch.Generator().manual_seed(0))  # (N, 2) float32


def model(timestep: str):
    return ModelGMM(parametrisation="eps_discrete_vp", timestep=timestep).run()


def eps_network():
    """net(x_vp (N, 2), t ()) -> eps (N, 2): the GMM's exact eps at sigma(t) of the model's table."""
    net = ExactNetwork(ModelGMM().run(), model("continuous").sampling, "eps")
    return lambda x_vp, t: net(x_vp, t.to(torch.float64).expand(x_vp.shape[0]))  # int64 or float32 t


def drive(sched) -> torch.Tensor:
    """diffusers' sampling loop from NOISE: the final x (N, 2) in the scheduler's space."""
    net = eps_network()
    x = NOISE * sched.init_noise_sigma  # (N, 2)
    for t in sched.timesteps:
        x = sched.step(net(sched.scale_model_input(x, t), t), t, x).prev_sample
    return x


def ours(sampler: Sampler, sched, timestep: str, vp: bool) -> torch.Tensor:
    """Our sampler on the scheduler's sigmas from NOISE, returned in the scheduler's space (VE or VP)."""
    grid = Sigmas(sched.sigmas.double())
    scale = (1 + grid.values ** 2).sqrt().float() if vp else torch.ones(grid.steps + 1)  # (S+1,) x / x_vp
    state = sampler.init(NOISE * sched.init_noise_sigma * scale[0], grid)  # x = x_vp / alpha
    return run_steps(sampler, model(timestep), state, NoiseSource(0)).x / scale[-1]


def distances(got: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    dist = (got.double() - expected.double()).norm(dim=1)  # (N,)
    assert torch.isfinite(dist).all()
    return float(dist.median()), float(dist.quantile(0.999))


def assert_parity_only_with(right: tuple[float, float], wrong: tuple[float, float]) -> None:
    assert right[0] < 1e-4 and right[1] < 1e-4, right
    assert wrong[0] > 100 * right[0] and wrong[0] > 1e-4, (right, wrong)


@pytest.mark.parametrize("steps", [10, 25])
def test_euler_karras_calls_the_model_at_continuous_timesteps(steps):
    """EulerDiscreteScheduler keeps the interpolated timestep: timestep='continuous' matches, 'rounded' does not."""
    d = diffusers()
    sched = d.EulerDiscreteScheduler(**SD, use_karras_sigmas=True)
    sched.set_timesteps(steps)
    assert not torch.equal(sched.timesteps, sched.timesteps.round())
    expected = drive(sched)
    right, wrong = (distances(ours(Euler(), sched, mode, vp=False), expected) for mode in ("continuous", "rounded"))
    assert_parity_only_with(right, wrong)


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("final_sigmas_type", ["zero", "sigma_min"])
def test_dpmpp_2m_karras_calls_the_model_at_rounded_timesteps(steps, final_sigmas_type):
    """DPMSolverMultistepScheduler(dpmsolver++, order 2, lower_order_final on) rounds: timestep='rounded'
    matches, 'continuous' does not.

    Final-step rules agree for every setting: diffusers' last step is first order when it goes to
    sigma = 0 (ours too: x = D there) or, with lower_order_final, under 15 steps; but its Karras grid
    with final 'sigma_min' ends [..., sigma_min, sigma_min], a last step of length 0 whatever its order."""
    d = diffusers()
    sched = d.DPMSolverMultistepScheduler(**SD, use_karras_sigmas=True, algorithm_type="dpmsolver++", solver_order=2,
                                          final_sigmas_type=final_sigmas_type)
    sched.set_timesteps(steps)
    assert sched.timesteps.dtype == torch.int64
    assert float(sched.sigmas[-1]) == (0.0 if final_sigmas_type == "zero" else float(sched.sigmas[-2]))
    expected = drive(sched)
    right, wrong = (distances(ours(Dpmpp2M(), sched, mode, vp=True), expected) for mode in ("rounded", "continuous"))
    assert_parity_only_with(right, wrong)
