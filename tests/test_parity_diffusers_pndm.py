"""Parity of sampler.pndm with diffusers' PNDMScheduler in float64, both warm starts.

Both sides run the exact GMM denoiser (model.gmm) on the scheduler's own sigma grid from the same
noise; diffusers keeps x_vp = x / sqrt(1 + sigma^2) and is driven as its pipeline does (per
timestep step(eps(x, t), t, x)), its alphas_cumprod table cast to float64 so that no float32 step
hides an error. With skip_prk_steps=False diffusers' pseudo Runge-Kutta stages sit at the timestep
halfway between two grid timesteps; ours at the log-SNR midpoint sqrt(sigma sigma'). The test sets
diffusers' table at those three half timesteps to that level (only the PRK stages read them), so the
same method is compared on the same levels. Measured (2000 samples, 10 and 25 steps): max distance
below 1e-12 (the test asserts 1e-9); a PRK stage level off by 1% moves it to ~1e-3."""
import pytest
import torch

from peers import diffusers
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.pndm import Pndm

F64 = torch.float64
BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
N = 2000
GMM = ModelGMM().run()
NOISE = torch.randn(N, 2, generator=torch.Generator().manual_seed(3), dtype=F64)  # (N, 2)


def sigma_of(alpha_bar: torch.Tensor) -> torch.Tensor:
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def scheduler(steps: int, skip_prk: bool, offset: int, midpoint_scale: float = 1.0):
    """A float64 PNDMScheduler with its sigma grid (S + 1,) (grid timesteps, then the final level)."""
    sched = diffusers().PNDMScheduler(**BETAS, skip_prk_steps=skip_prk, steps_offset=offset)
    sched.set_timesteps(steps)
    sched.alphas_cumprod = sched.alphas_cumprod.to(F64)
    sched.final_alpha_cumprod = sched.final_alpha_cumprod.to(F64)
    grid_t = sorted(set(sched._timesteps.tolist()), reverse=True)
    sigmas = torch.cat([sigma_of(sched.alphas_cumprod[grid_t]), sigma_of(sched.final_alpha_cumprod).reshape(1)])
    half = sched.config.num_train_timesteps // steps // 2
    for i in range(0 if skip_prk else 3):  # the PRK stage levels: our log-SNR midpoints
        mid = (sigmas[i] * sigmas[i + 1]).sqrt() * midpoint_scale
        sched.alphas_cumprod[grid_t[i] - half] = 1 / (1 + mid ** 2)
    return sched, sigmas


def drive(sched, sigmas: torch.Tensor) -> torch.Tensor:
    """diffusers' loop; returns x (N, 2) in sigma space at the grid's last level."""
    x = NOISE.clone()  # x_vp at sigma_max: init_noise_sigma is 1
    for t in sched.timesteps:
        sigma = sigma_of(sched.alphas_cumprod[int(t)])
        alpha = (1 + sigma ** 2).rsqrt()
        x_ve = x / alpha
        eps = (x_ve - GMM(x_ve, sigma.expand(N))) / sigma  # (N, 2)
        x = sched.step(eps, t, x).prev_sample
    return x * (1 + sigmas[-1] ** 2).sqrt()


def ours(sampler: Pndm, sigmas: torch.Tensor) -> torch.Tensor:
    grid = Sigmas(sigmas)
    state = sampler.init(NOISE * (1 + sigmas[0] ** 2).sqrt(), grid)
    return run_steps(sampler, GMM, state, NoiseSource(0)).x


@pytest.mark.parametrize("steps, offset", [(10, 0), (25, 1)])
@pytest.mark.parametrize("warmup", ["prk", "plms"])
def test_pndm_matches_diffusers(warmup, steps, offset):
    sched, sigmas = scheduler(steps, skip_prk=warmup == "plms", offset=offset)
    dist = (ours(Pndm(warmup=warmup), sigmas) - drive(sched, sigmas)).norm(dim=1)  # (N,)
    assert float(dist.max()) < 1e-9, float(dist.max())


def test_pndm_parity_sees_the_prk_stage_levels():
    """The comparison is sharp: moving diffusers' PRK stage levels by 1% breaks it."""
    sched, sigmas = scheduler(10, skip_prk=False, offset=0, midpoint_scale=1.01)
    dist = (ours(Pndm(), sigmas) - drive(sched, sigmas)).norm(dim=1)  # (N,)
    assert float(dist.median()) > 1e-5, float(dist.median())


def test_pndm_counts_its_calls_as_diffusers_does():
    """diffusers' timesteps list has one entry per model call: 12 + (S - 3) with PRK, S + 1 without."""
    for warmup, skip in (("prk", False), ("plms", True)):
        sched, sigmas = scheduler(10, skip_prk=skip, offset=0)
        sampler = Pndm(warmup=warmup)
        assert len(sched.timesteps) == sum(sampler.nfe_at(i) for i in range(10))
