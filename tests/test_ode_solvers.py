"""The deterministic k-diffusion-family solvers beyond what the shared suites check: convergence
orders for every order parameter (and where test_samplers' step range does not show the rate),
dpm_adaptive's tolerance control, iPNDM against ComfyUI's formula, exact LMS coefficients, EDM
churn's noise contract and parameter validation."""
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import integrate
from scipy.integrate import solve_ivp

from samplegraph.nodes.core.denoiser import CountingDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpm_2 import Dpm2
from samplegraph.nodes.samplers.dpm_adaptive import DpmAdaptive
from samplegraph.nodes.samplers.dpm_solver import DpmSolver
from samplegraph.nodes.samplers.dpmpp_3m import Dpmpp3M
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.samplers.ipndm import Ipndm
from samplegraph.nodes.samplers.lms import Lms, lms_coefficients
from samplegraph.nodes.samplers.pndm import Pndm
from samplegraph.nodes.schedules.karras import Karras
from test_samplers import SIGMA_END, SIGMA_MAX, flow_reference, karras_to_end

F64 = torch.float64


@pytest.fixture(scope="module")
def problem():
    model = ModelGMM().run()
    x = SIGMA_MAX * torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=F64)  # (B, 2)
    return model, x, flow_reference(model, x)


def median_error(sampler: Sampler, problem, sigmas: Sigmas) -> float:
    model, x, reference = problem
    out = run_steps(sampler, model, sampler.init(x, sigmas), NoiseSource(0)).x
    return float((out - reference).norm(dim=1).median())


def slope(sampler: Sampler, problem, counts: list[int]) -> float:
    errors = [median_error(sampler, problem, karras_to_end(n)) for n in counts]
    return float(-np.polyfit(np.log(counts), np.log(errors), 1)[0])


# (sampler, expected order, step counts where that rate shows). LMS starts with lower orders
# (an Euler first step), which caps its rate at 2 on very fine grids; the start's error constant
# is tiny (paths are nearly straight at sigma_max), so k shows up to a few hundred steps.
# DPM-Solver++(3M) as k-diffusion, ComfyUI, diffusers and Lu et al.'s code write it weights the
# second difference D2 (~ h^2 D''/2) by phi_3 where the Taylor term needs 2 phi_3: order 2.
# iPNDM's fixed (uniform-step) weights make it order 2 on Karras' non-uniform grid, and so do
# PNDM's (PLMS after either warm start; measured 1.92 for both over 32-256 steps).
ORDERS = [
    *[(Lms(solver_order=k), k, [32, 64, 128]) for k in (1, 2, 3)],
    (Lms(), 4, [64, 128, 256]),
    *[(DpmSolver(solver_order=k), k, [16, 32, 64, 128]) for k in (1, 2, 3)],
    (Dpmpp3M(), 2, [128, 256, 512]),
    *[(Ipndm(solver_order=k), min(k, 2), [32, 64, 128, 256]) for k in (1, 2, 3, 4)],
    *[(Pndm(warmup=w), 2, [32, 64, 128, 256]) for w in ("prk", "plms")],
]


@pytest.mark.parametrize("sampler, order, counts", ORDERS,
                         ids=[f"{s.__node_kind__}-{s.model_dump()}" for s, _, _ in ORDERS])
def test_convergence_order_of_each_variant(sampler, order, counts, problem):
    assert sampler.step_order == order
    assert abs(slope(sampler, problem, counts) - order) < 0.3


def test_dpmpp_3m_declares_its_measured_order():
    assert Dpmpp3M.order == 2 and Ipndm.order == 2 and Lms.order == 4 and DpmSolver.order == 3


def test_dpm_adaptive_error_follows_its_tolerance(problem):
    """Integrated from sigma_max to sigma_end in one interval: error ~ tolerance, NFE grows as it shrinks."""
    model = problem[0]
    errors, nfes = [], []
    for tol in (1e-3, 1e-4, 1e-5):
        sampler, counted = DpmAdaptive(rtol=tol, atol=tol), CountingDenoiser(model)
        out = run_steps(sampler, counted, sampler.init(problem[1], Sigmas.of([SIGMA_MAX, SIGMA_END])),
                        NoiseSource(0)).x
        errors.append(float((out - problem[2]).norm(dim=1).median()))
        nfes.append(counted.calls)
        assert errors[-1] < 30 * tol, (tol, errors)
    assert errors[0] > 5 * errors[1] and errors[1] > 4 * errors[2] and nfes[0] < nfes[1] < nfes[2], (errors, nfes)


def test_dpm_adaptive_schedule_levels_are_checkpoints(problem):
    """Extra levels do not spoil accuracy; each step ends exactly on its level."""
    model, x, reference = problem
    sampler = DpmAdaptive(rtol=1e-4, atol=1e-4)
    sigmas = Sigmas.of([SIGMA_MAX, 10.0, 1.0, SIGMA_END])
    state = sampler.init(x, sigmas)
    for level in (10.0, 1.0):
        state = sampler.step(model, state, NoiseSource(0))
        assert state.sigma.unique().tolist() == [level]
    out = sampler.step(model, state, NoiseSource(0)).x
    assert float((out - reference).norm(dim=1).median()) < 3e-3


def test_dpm_adaptive_final_step_to_zero_is_x0():
    model = ModelGMM().run()
    sampler, x = DpmAdaptive(), 0.05 * torch.randn(4, 2, dtype=F64)
    state = sampler.init(x, Sigmas.of([0.05, 0.0]))
    out = sampler.step(model, state, NoiseSource(0))
    torch.testing.assert_close(out.x, model(x, torch.full((4,), 0.05, dtype=F64)), rtol=0, atol=0)


def test_pndm_is_fourth_order_on_steps_uniform_in_sigma():
    """With equal steps PLMS's weights are the exact Adams-Bashforth ones and the pseudo Runge-Kutta start
    is RK4 through phi: rate 4 (measured 3.8 over 64-256 steps on sigma 3 -> 1; the improved-Euler start's
    O(h^3) error pulls 'plms' towards 3)."""
    model = ModelGMM().run()
    x = 3.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)  # (64, 2)

    def rhs(sigma: float, y: np.ndarray) -> np.ndarray:
        xs = torch.from_numpy(y).reshape(64, 2)  # (64, 2)
        return ((xs - model(xs, torch.full((64,), sigma, dtype=F64))) / sigma).reshape(-1).numpy()

    end = solve_ivp(rhs, (3.0, 1.0), x.reshape(-1).numpy(), method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
    reference = torch.from_numpy(end).reshape(64, 2)
    counts = [64, 128, 256]
    errors = [float((run_steps(Pndm(), model, Pndm().init(x, Sigmas(torch.linspace(3.0, 1.0, n + 1, dtype=F64))),
                               NoiseSource(0)).x - reference).norm(dim=1).median()) for n in counts]
    assert abs(-np.polyfit(np.log(counts), np.log(errors), 1)[0] - 4) < 0.3, errors


def comfy_ipndm(model, x: torch.Tensor, sigmas: torch.Tensor, max_order: int = 4) -> torch.Tensor:
    """ComfyUI's sample_ipndm (comfy/k_diffusion/sampling.py), transcribed as the test oracle:
    d = (x - D) / sigma; Adams-Bashforth weights 1 | 3/2, -1/2 | 23/12, -16/12, 5/12 |
    55/24, -59/24, 37/24, -9/24 on the last max_order derivatives; x = D on the step to 0."""
    weights = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    buffer: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        d = (x - denoised) / sigmas[i]
        order = min(max_order, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + (sigmas[i + 1] - sigmas[i]) * sum(w * v for w, v in zip(weights[order], [d, *buffer[::-1]]))
        buffer = (buffer + [d])[-(max_order - 1):] if max_order > 1 else []
    return x


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ipndm_matches_comfyui_formula(order):
    """Our solver_order is ComfyUI's max_order."""
    model = ModelGMM().run()
    x = 80.0 * torch.randn(256, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    sigmas = Karras(steps=12).run()
    sampler = Ipndm(solver_order=order)
    got = run_steps(sampler, model, sampler.init(x, sigmas), NoiseSource(0)).x
    dist = (got - comfy_ipndm(model, x, sigmas.values, order)).norm(dim=1)
    assert float(dist.median()) < 1e-10 and float(dist.quantile(0.999)) < 1e-8


def kd_lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """k-diffusion's linear_multistep_coeff: scipy quad of the Lagrange basis polynomial."""
    def basis(tau: float) -> float:
        return float(np.prod([(tau - t[i - k]) / (t[i - j] - t[i - k]) for k in range(order) if k != j]))
    return integrate.quad(basis, t[i], t[i + 1], epsabs=0, epsrel=1e-13)[0]


@pytest.mark.parametrize("order", [1, 2, 3, 4, 6])
def test_lms_coefficients_are_the_integrated_lagrange_basis(order):
    sigmas = Karras(steps=9, sigma_min=0.03, sigma_max=50.0).run().values
    step = torch.arange(9)
    got = lms_coefficients(sigmas, step, order)  # (9, order)
    for i in range(9):
        k = min(i + 1, order)
        expected = [kd_lms_coefficient(k, sigmas.numpy(), i, j) for j in range(k)] + [0.0] * (order - k)
        assert got[i].tolist() == pytest.approx(expected, rel=1e-11, abs=1e-11)
    torch.testing.assert_close(got.sum(1), sigmas[1:] - sigmas[:-1], rtol=1e-12, atol=1e-12)  # sum = dt


@pytest.mark.parametrize("cls", [Heun, Dpm2])
def test_churn_noise_is_keyed_by_particle_and_step(cls):
    model, sigmas = ModelGMM().run(), Karras(steps=8, sigma_max=10.0).run()
    x = 10.0 * torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    churny = cls(s_churn=5.0)

    def solve(sampler, xs, particle=None, seed=0):
        return run_steps(sampler, model, sampler.init(xs, sigmas, particle), NoiseSource(seed)).x

    whole = solve(churny, x)
    singles = torch.cat([solve(churny, x[i:i + 1], torch.tensor([i])) for i in range(6)])
    torch.testing.assert_close(singles, whole, rtol=1e-12, atol=1e-12)
    assert torch.equal(whole, solve(churny, x)) and not torch.equal(whole, solve(churny, x, seed=1))
    assert not torch.equal(whole, solve(cls(), x))
    outside = cls(s_churn=5.0, s_tmin=20.0)  # no sigma in the window: the deterministic path exactly
    assert torch.equal(solve(outside, x), solve(cls(), x))


def test_churn_window_must_not_be_empty():
    with pytest.raises(ValidationError) as info:
        Heun(s_churn=1.0, s_tmin=2.0, s_tmax=1.0)
    assert info.value.errors()[0]["loc"] == ("s_tmax",) and "s_churn" in str(info.value)
    with pytest.raises(ValidationError):
        Dpm2(s_churn=-1.0)


@pytest.mark.parametrize("sampler, error_field", [(lambda: Lms(solver_order=0), "solver_order"),
                                                  (lambda: DpmSolver(solver_order=4), "solver_order"),
                                                  (lambda: DpmAdaptive(solver_order=1), "solver_order"),
                                                  (lambda: DpmAdaptive(rtol=0), "rtol"),
                                                  (lambda: Ipndm(solver_order=5), "solver_order")])
def test_bad_orders_and_tolerances_name_the_field(sampler, error_field):
    with pytest.raises(ValidationError) as info:
        sampler()
    assert info.value.errors()[0]["loc"] == (error_field,)
