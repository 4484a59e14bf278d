"""sampler.er_sde against a direct transcription of the ER-SDE-Solver formulas (Cui et al. 2023; the
reference code's ve_xstart 1st/2nd/3rd-order Taylor solvers, ComfyUI's sample_er_sde), with the same
normals and the integrals I_1, I_2 by scipy's adaptive quad; and its two closed-form special cases:
order 1 with f = sigma is Euler's step, with f = sigma^2 Euler ancestral's (the same noise).
Distribution and ODE-limit order tests: test_sde_distribution.py. Measured: max distance ~1e-13."""
import pytest
import torch
from scipy import integrate

from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.er_sde import ErSde, noise_scale
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.euler_ancestral import EulerAncestral
from samplegraph.nodes.schedules.karras import Karras

F64 = torch.float64
N = 256
MODEL = ModelGMM().run()
SIGMAS = Karras(steps=12, sigma_min=0.02, sigma_max=80.0).run()  # ends in 0
NOISE = NoiseSource(7)
PARTICLES = torch.arange(N)
X = 80.0 * NoiseSource(1).normal(PARTICLES, -1, (2,), dtype=F64)  # (N, 2)


def transcription(kind: str, order: int) -> torch.Tensor:
    """The formulas step by step: x' = r x + (1 - r) D + (dt + f(s') I_1) D' + (dt^2/2 + f(s') I_2) D''
    + sqrt(s'^2 - s^2 r^2) z, D' = D[i, i-1], D'' = 2 D[i, i-1, i-2], order min(i + 1, order); x = D at 0."""
    s = [float(v) for v in SIGMAS.values]
    f = lambda v: float(noise_scale(kind, torch.tensor(v, dtype=F64)))  # noqa: E731
    x, old_x0, old_d = X.clone(), None, None
    for i in range(len(s) - 1):
        x0 = MODEL(x, torch.full((N,), s[i], dtype=F64))  # (N, 2)
        if s[i + 1] == 0:
            x = x0
            continue
        r = f(s[i + 1]) / f(s[i])
        dt = s[i + 1] - s[i]
        new = r * x + (1 - r) * x0
        stage = min(order, i + 1)
        if stage >= 2:
            i1 = integrate.quad(lambda v: 1 / f(v), s[i + 1], s[i], epsabs=1e-14, epsrel=1e-13)[0]
            d = (x0 - old_x0) / (s[i] - s[i - 1])
            new = new + (dt + f(s[i + 1]) * i1) * d
            if stage >= 3:
                i2 = integrate.quad(lambda v: (v - s[i]) / f(v), s[i + 1], s[i], epsabs=1e-14, epsrel=1e-13)[0]
                new = new + (dt ** 2 / 2 + f(s[i + 1]) * i2) * 2 * (d - old_d) / (s[i] - s[i - 2])
            old_d = d
        z = NOISE.normal(PARTICLES, i, (2,), dtype=F64)  # (N, 2) the normals the node draws at step i
        var = 0.0 if kind == "ode" else max(s[i + 1] ** 2 - s[i] ** 2 * r ** 2, 0.0)  # 'ode': 0 (round-off ~1e-13)
        x = new + z * var ** 0.5
        old_x0 = x0
    return x


def ours(sampler) -> torch.Tensor:
    return run_steps(sampler, MODEL, sampler.init(X, SIGMAS), NOISE).x


@pytest.mark.parametrize("kind, order", [("sde_5", 1), ("sde_5", 2), ("sde_5", 3), ("sde", 3), ("ode", 3),
                                         ("sde_1", 3), ("sde_2", 2), ("sde_3", 3), ("sde_4", 3)])
def test_matches_the_formulas_with_the_same_normals(kind, order):
    dist = (ours(ErSde(noise_scale=kind, solver_order=order)) - transcription(kind, order)).norm(dim=1)  # (N,)
    assert float(dist.max()) < 1e-9, float(dist.max())


def test_order_one_special_cases_are_euler_and_euler_ancestral():
    """f = sigma: r = sigma'/sigma, no noise (Euler); f = sigma^2: r = (sigma'/sigma)^2 = sigma_down/sigma and
    std sigma' sqrt(1 - (sigma'/sigma)^2) = sigma_up (Euler ancestral, eta = 1, the same normals)."""
    assert (ours(ErSde(noise_scale="ode", solver_order=1)) - ours(Euler())).abs().max() < 1e-12
    assert (ours(ErSde(noise_scale="sde", solver_order=1)) - ours(EulerAncestral())).abs().max() < 1e-12


def test_higher_orders_change_the_result():
    """The Taylor terms are live: orders 1, 2, 3 differ (by far more than the parity tolerance)."""
    a, b, c = (ours(ErSde(solver_order=k)) for k in (1, 2, 3))
    assert float((a - b).norm(dim=1).median()) > 1e-3 and float((b - c).norm(dim=1).median()) > 1e-4
