"""sampler.sa_solver: parity with diffusers' SASolverScheduler (same sigmas, same model, same noise) over
orders, tau, lower-order-final and a tau window, in float32 (as pipelines run it) and in float64 (where the
two agree to round-off: diffusers' closed forms in absolute lambda cancel in float32 at high orders); the
tau = 0 limit's convergence order on the analytic mixture."""
import itertools

import numpy as np
import pytest
import torch

from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.samplers.sa_solver import SaSolver
from test_parity_diffusers import BETAS, GMM, N, NOISE, PARTICLES, assert_parity, diffusers, draw, drive, ours
from test_samplers import karras_to_end, problem  # noqa: F401 - the shared fixture

SCHED_MODULE = "diffusers.schedulers.scheduling_sasolver"


def scheduler(steps: int, p: int, c: int, tau_func, lower_final: bool = True, karras: bool = False):
    sched = diffusers().SASolverScheduler(**BETAS, prediction_type="sample", predictor_order=p, corrector_order=c,
                                          tau_func=tau_func, lower_order_final=lower_final, use_karras_sigmas=karras)
    sched.set_timesteps(steps)
    return sched


def patch_noise(monkeypatch, dtype: torch.dtype = torch.float32):
    module = __import__(SCHED_MODULE, fromlist=["randn_tensor"])
    return lambda i: monkeypatch.setattr(module, "randn_tensor",
                                         lambda *a, **k: NOISE.normal(PARTICLES, i, (2,), dtype=dtype))


@pytest.mark.parametrize("p, c, tau", list(itertools.product([1, 2, 3], [1, 2, 3], [0.0, 1.0])))
def test_parity_float32(p, c, tau, monkeypatch):
    sched = scheduler(12, p, c, lambda t: tau)
    expected = drive(sched, sched.sigmas, patch=patch_noise(monkeypatch))
    assert_parity(ours(SaSolver(predictor_order=p, corrector_order=c, tau=tau), sched.sigmas), expected)


def drive64(sched, patch) -> torch.Tensor:
    """diffusers' loop in float64 (its sigmas upcast); x_vp (N, 2)."""
    sig = sched.sigmas = sched.sigmas.double()
    x = draw(-1).double()  # (N, 2) init_noise_sigma = 1
    for i, t in enumerate(sched.timesteps):
        x0 = GMM(x * (1 + sig[i] ** 2).sqrt(), torch.full((N,), float(sig[i]), dtype=torch.float64))  # (N, 2)
        patch(i)
        x = sched.step(x0, t, x).prev_sample
    return x


@pytest.mark.parametrize("p, c, tau, lower_final", [
    (1, 1, 0.7, True), (2, 2, 1.0, True), (3, 2, 0.7, False), (2, 3, 1.0, False), (4, 4, 0.5, True),
    (4, 1, 0.3, False), (3, 3, 0.0, True)])
def test_parity_float64(p, c, tau, lower_final, monkeypatch):
    sched = scheduler(12, p, c, lambda t: tau, lower_final)
    expected = drive64(sched, patch_noise(monkeypatch, torch.float64))
    sampler = SaSolver(predictor_order=p, corrector_order=c, tau=tau, lower_order_final=lower_final)
    grid = Sigmas(sched.sigmas)
    state = run_steps(sampler, GMM, sampler.init(draw(-1).double() * (1 + grid.values[0] ** 2).sqrt(), grid), NOISE)
    got = state.x / (1 + grid.values[-1] ** 2).sqrt()  # (N, 2) x_vp
    assert float((got - expected).norm(dim=1).max()) < 1e-10


def test_parity_tau_window_and_karras(monkeypatch):
    """diffusers' default tau_func (1 on timesteps 200..800) as a sigma window between grid levels."""
    sched = scheduler(15, 2, 2, lambda t: 1 if 200 <= t <= 800 else 0, karras=True)
    expected = drive(sched, sched.sigmas, patch=patch_noise(monkeypatch))
    ts, sig = sched.timesteps.tolist(), sched.sigmas.double()
    inside = [i for i, t in enumerate(ts) if 200 <= t <= 800]
    assert 0 < len(inside) < len(ts)
    lo, hi = float(sig[inside[-1]] + sig[inside[-1] + 1]) / 2, float(sig[inside[0]] + sig[inside[0] - 1]) / 2
    assert_parity(ours(SaSolver(tau=1.0, tau_sigma_min=lo, tau_sigma_max=hi), sched.sigmas), expected)


@pytest.mark.parametrize("p, c, few", [(1, 0, True), (2, 0, True), (1, 2, True), (2, 3, True), (3, 3, True),
                                       (3, 4, True), (2, 0, False), (2, 3, False)])
def test_tau_zero_is_an_ode_solver_of_the_declared_order(p, c, few, problem):  # noqa: F811
    """Without the lower-order final steps (whose tiny error constants still cap fine grids at rate 2)."""
    model, x, reference = problem
    sampler = SaSolver(predictor_order=p, corrector_order=c, tau=0.0, lower_order_final=False, few_step_term=few)
    assert not sampler.draws_noise and sampler.step_order == (p if c == 0 else min(p + 1, c))
    counts = [64, 128, 256]
    errors = [float((run_steps(sampler, model, sampler.init(x, karras_to_end(n)), NoiseSource(0)).x - reference)
                    .norm(dim=1).median()) for n in counts]
    slope = -np.polyfit(np.log(counts), np.log(errors), 1)[0]
    assert abs(slope - sampler.step_order) < 0.3, (errors, slope)
    assert torch.equal(run_steps(sampler, model, sampler.init(x, karras_to_end(8)), NoiseSource(1)).x,
                       run_steps(sampler, model, sampler.init(x, karras_to_end(8)), NoiseSource(2)).x)
