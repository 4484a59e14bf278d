"""Parity with diffusers' VP schedulers in float32: DDIM, DDPM, UniPC, DEIS and LCM.

Both sides run the exact GMM denoiser. diffusers keeps x_vp = x / sqrt(1 + sigma^2) and is driven
as its pipelines do (x = noise * init_noise_sigma; per timestep step(model(x, t), t, x)); the
"network" answers in diffusers' space (x0 or eps) at the noise level of its step index. Our
samplers get the scheduler's own sigma grid and start from the same noise in sigma space;
stochastic steps get the same normals (diffusers' variance_noise, or its randn_tensor patched).
Asserted: median and 99.9th percentile of the per-sample distance < 1e-4."""
import itertools

import pytest
import torch

from peers import diffusers
from samplegraph.nodes.core.denoiser import FunctionDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.ddim import Ddim
from samplegraph.nodes.samplers.ddpm import Ddpm
from samplegraph.nodes.samplers.deis import Deis
from samplegraph.nodes.samplers.lcm import Lcm
from samplegraph.nodes.samplers.unipc import UniPC

BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)  # SD's: sigma 0.029..14.6
N, SEED = 2000, 11
GMM = ModelGMM().run()
NOISE = NoiseSource(SEED)
PARTICLES = torch.arange(N)


def draw(step: int) -> torch.Tensor:
    """The normals our samplers draw at `step` (slot 0), for injection into diffusers."""
    return NOISE.normal(PARTICLES, step, (2,), dtype=torch.float32)  # (N, 2)


def sigma_of(alpha_bar: torch.Tensor) -> torch.Tensor:
    return ((1 - alpha_bar.double()) / alpha_bar.double()).sqrt()


def drive(sched, sigmas: torch.Tensor, output: str = "sample", kwargs=None, patch=None, stop: int | None = None):
    """diffusers' loop from noise; returns x_vp (N, 2) after `stop` steps (all by default)."""
    x = draw(-1) * sched.init_noise_sigma  # (N, 2)
    for i, t in enumerate(sched.timesteps[:stop]):
        sigma = sigmas[i].double()
        alpha = (1 + sigma ** 2).rsqrt()
        x0 = GMM((x.double() / alpha).float(), torch.full((N,), float(sigmas[i])))  # (N, 2) float32
        out = x0 if output == "sample" else ((x.double() - alpha * x0) / (sigma * alpha)).float()
        if patch is not None:
            patch(i)
        x = sched.step(out, t, x, **(kwargs(i) if kwargs else {})).prev_sample
    return x


def ours(sampler: Sampler, sigmas: torch.Tensor, denoise=GMM, stop: int | None = None) -> torch.Tensor:
    """Our sampler from the same noise, in sigma space, converted to x_vp after `stop` steps (all by default)."""
    grid = Sigmas(sigmas.double())
    state = sampler.init(draw(-1) * (1 + grid.values[0] ** 2).sqrt().float(), grid)  # x = x_vp / alpha
    if stop is None:
        state = run_steps(sampler, denoise, state, NOISE)
    for _ in range(stop or 0):
        state = sampler.step(denoise, state, NOISE)
    return (state.x.double() / (1 + grid.values[grid.steps if stop is None else stop] ** 2).sqrt()).float()


def assert_parity(got: torch.Tensor, expected: torch.Tensor) -> None:
    dist = (got.double() - expected.double()).norm(dim=1)  # (N,)
    assert torch.isfinite(dist).all()
    assert float(dist.median()) < 1e-4 and float(dist.quantile(0.999)) < 1e-4, \
        (float(dist.median()), float(dist.quantile(0.999)), float(dist.max()))


def grid_from_timesteps(sched, final: torch.Tensor) -> torch.Tensor:
    """The VE sigmas of a scheduler without a `sigmas` table: its timesteps, then `final`."""
    return torch.cat([sigma_of(sched.alphas_cumprod[sched.timesteps]), sigma_of(final).reshape(1)])


@pytest.mark.parametrize("variant, order, corrector, lower_final, prediction", list(itertools.product(
    ["bh1", "bh2"], [1, 2, 3], [True, False], [True, False], ["data", "noise"])))
def test_unipc(variant, order, corrector, lower_final, prediction):
    d = diffusers()
    sched = d.UniPCMultistepScheduler(**BETAS, prediction_type="sample", solver_type=variant, solver_order=order,
                                      lower_order_final=lower_final, predict_x0=prediction == "data",
                                      disable_corrector=[] if corrector else list(range(12)),
                                      final_sigmas_type="sigma_min")  # 'zero' + bh1 is NaN in diffusers
    sched.set_timesteps(12)
    sampler = UniPC(solver_order=order, variant=variant, corrector=corrector, prediction=prediction,
                    lower_order_final="always" if lower_final else "never")
    assert_parity(ours(sampler, sched.sigmas), drive(sched, sched.sigmas))


def test_unipc_corrector_skip_and_eps_network():
    d = diffusers()
    sched = d.UniPCMultistepScheduler(**BETAS, solver_order=3, disable_corrector=[0, 4], final_sigmas_type="sigma_min")
    sched.set_timesteps(10)
    sampler = UniPC(solver_order=3, corrector_skip=(0, 4))
    assert_parity(ours(sampler, sched.sigmas), drive(sched, sched.sigmas, output="epsilon"))


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_to_sigma_zero(variant):
    """final_sigmas_type='zero': bh2 matches to the end; diffusers' bh1 last step is 0 * inf = NaN,
    so bh1 matches up to the last step and our last step is its limit, x = D(x, sigma)."""
    d = diffusers()
    sched = d.UniPCMultistepScheduler(**BETAS, prediction_type="sample", solver_type=variant, solver_order=2)
    sched.set_timesteps(12)
    assert float(sched.sigmas[-1]) == 0
    sampler = UniPC(variant=variant)
    if variant == "bh2":
        assert_parity(ours(sampler, sched.sigmas), drive(sched, sched.sigmas))
        return
    assert torch.isnan(drive(sched, sched.sigmas)).all()
    sched.set_timesteps(12)
    assert_parity(ours(sampler, sched.sigmas, stop=11), drive(sched, sched.sigmas, stop=11))


@pytest.mark.parametrize("order, lower_final, steps, output", list(itertools.product(
    [1, 2, 3], [True, False], [8, 20], ["sample", "epsilon"])))
def test_deis(order, lower_final, steps, output):
    d = diffusers()
    sched = d.DEISMultistepScheduler(**BETAS, prediction_type=output, solver_order=order, lower_order_final=lower_final)
    sched.set_timesteps(steps)
    assert float(sched.sigmas[-1]) > 0  # DEIS ends at the training sigma_min, not 0
    sampler = Deis(solver_order=order, lower_order_final="under_15_steps" if lower_final else "never")
    assert_parity(ours(sampler, sched.sigmas), drive(sched, sched.sigmas, output))


@pytest.mark.parametrize("eta, offset, output, alpha_one", [
    (0.0, 0, "sample", True), (0.0, 1, "epsilon", True), (0.5, 0, "epsilon", True),
    (1.0, 1, "sample", True), (0.3, 0, "sample", False)])
def test_ddim(eta, offset, output, alpha_one):
    """'leading' spacing (SD's, with steps_offset 1), where DDIM's previous timestep t - 1000 // n is the
    next timestep. With 'trailing' or 'linspace' it is not (e.g. 932 -> 866 after 999 -> 933): diffusers
    then lands on one level and starts the next step from another, which no sigma grid expresses."""
    d = diffusers()
    sched = d.DDIMScheduler(**BETAS, clip_sample=False, prediction_type=output, steps_offset=offset,
                            set_alpha_to_one=alpha_one)
    sched.set_timesteps(15)
    sigmas = grid_from_timesteps(sched, sched.final_alpha_cumprod)
    expected = drive(sched, sigmas, output, kwargs=lambda i: {"eta": eta, "variance_noise": draw(i)})
    assert_parity(ours(Ddim(eta=eta), sigmas), expected)


@pytest.mark.parametrize("variance, steps, output", [("fixed_small", 20, "epsilon"), ("fixed_large", 20, "epsilon"),
                                                     ("fixed_small", 10, "sample")])
def test_ddpm(variance, steps, output, monkeypatch):
    """diffusers forms 1 - alpha_bar in float32, which keeps only ~3 digits near t = 0 (alpha_bar =
    0.99915): at 50 steps its round-off alone moves the 99.9th percentile to 8.8e-5 (median 9e-6)."""
    d = diffusers()
    sched = d.DDPMScheduler(**BETAS, clip_sample=False, variance_type=variance, prediction_type=output)
    sched.set_timesteps(steps)
    assert int(sched.timesteps[-1]) == 0  # leading spacing: no noise on the last step, as ours to sigma = 0
    sigmas = grid_from_timesteps(sched, torch.tensor(1.0))
    module = __import__("diffusers.schedulers.scheduling_ddpm", fromlist=["randn_tensor"])
    patch = lambda i: monkeypatch.setattr(module, "randn_tensor", lambda *a, **k: draw(i))  # noqa: E731
    expected = drive(sched, sigmas, output, patch=patch)
    assert_parity(ours(Ddpm(variance="posterior" if variance == "fixed_small" else "beta"), sigmas), expected)


@pytest.mark.parametrize("steps", [4, 8])
def test_lcm(steps, monkeypatch):
    """LCMScheduler's boundary scalings (c_skip, c_out) belong to the consistency model: our
    Denoiser applies them, the sampler only denoises and re-noises."""
    d = diffusers()
    sched = d.LCMScheduler(**BETAS, clip_sample=False, prediction_type="sample")
    sched.set_timesteps(steps)
    sigmas = grid_from_timesteps(sched, torch.tensor(1.0))
    grid32 = sigmas.float()

    def consistency(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        index = (sigma[:, None] == grid32[None, :]).int().argmax(1)  # (B,) step of each particle
        c_skip, c_out = (torch.tensor(c, dtype=torch.float32) for c in zip(*(
            sched.get_scalings_for_boundary_condition_discrete(int(sched.timesteps[i])) for i in index.tolist())))
        return c_out[:, None] * GMM(x, sigma) + c_skip[:, None] * x * (1 + sigma[:, None] ** 2).rsqrt()

    module = __import__("diffusers.schedulers.scheduling_lcm", fromlist=["randn_tensor"])
    patch = lambda i: monkeypatch.setattr(module, "randn_tensor", lambda *a, **k: draw(i))  # noqa: E731
    expected = drive(sched, sigmas, "sample", patch=patch)
    assert_parity(ours(Lcm(), sigmas, denoise=FunctionDenoiser(consistency)), expected)
