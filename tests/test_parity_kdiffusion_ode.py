"""Parity of the deterministic k-diffusion-family solvers with k-diffusion 0.1.1.post1 in float64:
the same GMM denoiser, sigmas (Karras and exponential) and initial noise give the same samples
(median and 99.9th-percentile per-sample distance < 1e-5). Churn noise is injected into
k-diffusion by replacing its torch.randn_like with our NoiseSource draws, step by step."""
import functools

import pytest
import torch

from peers import kdiffusion_sampling
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpm_2 import Dpm2
from samplegraph.nodes.samplers.dpm_adaptive import DpmAdaptive
from samplegraph.nodes.samplers.dpm_solver import DpmSolver
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.dpmpp_2s import Dpmpp2S
from samplegraph.nodes.samplers.dpmpp_3m import Dpmpp3M
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.samplers.lms import Lms

F64 = torch.float64
TOL = 1e-5
STEPS = 15
SEED = 11


@pytest.fixture(scope="module")
def kd():
    return kdiffusion_sampling()


@pytest.fixture(scope="module")
def model():
    return ModelGMM().run()


def noise(n: int = 512) -> torch.Tensor:
    return 80.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(3), dtype=F64)  # (n, 2)


def schedule(kd, kind: str) -> torch.Tensor:
    """k-diffusion's own sigmas (its float32 ramp), in float64, ending in 0."""
    make = kd.get_sigmas_karras if kind == "karras" else kd.get_sigmas_exponential
    return make(STEPS, 0.002, 80.0).to(F64)


def assert_parity(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    dist = (ours - theirs).flatten(1).norm(dim=1)  # (B,)
    assert torch.isfinite(ours).all()
    median, p999 = float(dist.median()), float(dist.quantile(0.999))
    assert median < TOL and p999 < TOL, (median, p999)


def ours(sampler: Sampler, model, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    return run_steps(sampler, model, sampler.init(x, Sigmas(sigmas)), NoiseSource(SEED)).x


def no_noise(sigma, sigma_next):  # noqa: ANN001, ANN201 - eta = 0 samplers never use it
    raise AssertionError("an eta = 0 sampler drew noise")


CASES = {
    "heun": (Heun(), "sample_heun", {}),
    "dpm_2": (Dpm2(), "sample_dpm_2", {}),
    "lms": (Lms(), "sample_lms", {}),
    "lms_order2": (Lms(solver_order=2), "sample_lms", {"order": 2}),
    "dpmpp_2m": (Dpmpp2M(), "sample_dpmpp_2m", {}),
    "dpmpp_2s": (Dpmpp2S(), "sample_dpmpp_2s_ancestral", {"eta": 0.0}),
    "dpmpp_3m": (Dpmpp3M(), "sample_dpmpp_3m_sde", {"eta": 0.0, "noise_sampler": no_noise}),
}


@pytest.mark.parametrize("kind", ["karras", "exponential"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_samples_as_k_diffusion(case, kind, kd, model):
    sampler, name, kwargs = CASES[case]
    sigmas, x = schedule(kd, kind), noise()
    expected = getattr(kd, name)(model, x, sigmas, disable=True, **kwargs)
    assert_parity(ours(sampler, model, x, sigmas), expected)


@pytest.mark.parametrize("cls, name", [(Heun, "sample_heun"), (Dpm2, "sample_dpm_2")])
def test_churn_matches_k_diffusion_with_the_same_noise(cls, name, kd, model, monkeypatch):
    """EDM churn (s_churn > 0, inside [s_tmin, s_tmax] only): k-diffusion draws randn_like once a step."""
    sigmas, x = schedule(kd, "karras"), noise()
    params = {"s_churn": 4.0, "s_tmin": 0.05, "s_tmax": 20.0, "s_noise": 1.003}
    draws = iter(range(STEPS))

    def same_noise(like: torch.Tensor) -> torch.Tensor:
        return NoiseSource(SEED).like(like, torch.arange(like.shape[0]), next(draws))

    with monkeypatch.context() as m:
        m.setattr(kd.torch, "randn_like", same_noise)
        expected = getattr(kd, name)(model, x, sigmas, disable=True, **params)
    got = ours(cls(**params), model, x, sigmas)
    assert_parity(got, expected)
    assert (got - ours(cls(), model, x, sigmas)).norm(dim=1).median() > 1e-3  # churn did something


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("kind", ["karras", "exponential"])
def test_dpm_solver_steps_match_k_diffusion(order, kind, kd, model):
    """Each interval is k-diffusion's DPMSolver.dpm_solver_<order>_step; the step to 0 is x = x0."""
    sigmas, x = schedule(kd, kind), noise()
    solver = kd.DPMSolver(model)
    step = getattr(solver, f"dpm_solver_{order}_step")
    expected = x
    for i in range(STEPS - 1):
        expected = step(expected, solver.t(sigmas[i]), solver.t(sigmas[i + 1]))[0]
    expected = model(expected, sigmas[-2].expand(x.shape[0]))
    assert_parity(ours(DpmSolver(solver_order=order), model, x, sigmas), expected)


@pytest.mark.parametrize("nfe", [10, 12])
def test_dpm_fast_is_a_schedule_plus_dpm_solver_orders(nfe, kd, model):
    """sample_dpm_fast = uniform steps in log sigma with orders [3, ..., 3, nfe % 3] (or [..., 2, 1]):
    the same State stepped by DpmSolver nodes of those orders."""
    x = noise()
    solver = kd.DPMSolver(model)
    t_start, t_end = solver.t(torch.tensor(80.0, dtype=F64)), solver.t(torch.tensor(0.002, dtype=F64))
    torch.set_default_dtype(F64)  # its torch.linspace of t takes the default dtype: float64, like the rest
    try:
        expected = solver.dpm_solver_fast(x, t_start, t_end, nfe, noise_sampler=lambda a, b: torch.zeros_like(x))
    finally:
        torch.set_default_dtype(torch.float32)
    m = nfe // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    state = DpmSolver().init(x, Sigmas((-torch.linspace(t_start, t_end, m + 1, dtype=F64)).exp()))
    for k in orders:
        state = DpmSolver(solver_order=k).step(model, state, NoiseSource(SEED))
    assert bool(state.done.all())
    assert_parity(state.x, expected)


@pytest.mark.parametrize("order", [2, 3])
def test_dpm_adaptive_matches_k_diffusion_particle_by_particle(order, kd, model):
    """k-diffusion's controller takes one error norm over the whole batch; ours one per particle,
    so a batch of ours equals k-diffusion run on each particle alone (schedule [sigma_max, sigma_min])."""
    x = noise(48)
    rtol, atol = (float(torch.tensor(v, dtype=torch.float32)) for v in (0.05, 0.0078))  # k-diffusion's float32
    solver = kd.DPMSolver(model)
    t_start, t_end = solver.t(torch.tensor(80.0, dtype=F64)), solver.t(torch.tensor(0.002, dtype=F64))
    expected, nfe = [], 0
    for i in range(x.shape[0]):
        out, info = solver.dpm_solver_adaptive(x[i:i + 1], t_start, t_end, order=order, rtol=rtol, atol=atol)
        expected.append(out)
        nfe += info["nfe"]
    sampler = DpmAdaptive(solver_order=order, rtol=rtol, atol=atol)
    assert_parity(ours(sampler, model, x, torch.tensor([80.0, 0.002], dtype=F64)), torch.cat(expected))
    assert nfe > 10 * order * x.shape[0]  # many sub-steps were taken, so the controller was exercised


def test_dpm_adaptive_batch_wide_norm_differs():
    """The departure is real: k-diffusion's batch-wide norm couples particles (documented)."""
    kd = kdiffusion_sampling()
    model, x = ModelGMM().run(), noise(8)
    solver = kd.DPMSolver(model)
    t = functools.partial(torch.tensor, dtype=F64)
    whole = solver.dpm_solver_adaptive(x, solver.t(t(80.0)), solver.t(t(0.002)))[0]
    alone = torch.cat([solver.dpm_solver_adaptive(x[i:i + 1], solver.t(t(80.0)), solver.t(t(0.002)))[0]
                       for i in range(8)])
    assert (whole - alone).norm(dim=1).max() > 1e-6
