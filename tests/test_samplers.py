"""Solvers on the analytic mixture: convergence order against a tight ODE reference, the
Karras schedule, and parity with k-diffusion when it is installed."""
import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.integrate import solve_ivp

from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.flow_sde import FlowSde
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.samplers.plan import Plan
from samplegraph.nodes.schedules.karras import Karras
from test_sampler_conformance import all_sampler_classes

F64 = torch.float64
SIGMA_MAX, SIGMA_END = 80.0, 0.02  # EDM's sigma_max; stop short of 0, where Heun's last step is Euler
STEP_COUNTS = [16, 32, 64, 128]
# rates that show only outside STEP_COUNTS (lms, dpmpp_3m) or follow a tolerance, not a step count
# (dpm_adaptive): their own convergence tests are in test_ode_solvers.py
OWN_ORDER_TEST = {"sampler.lms", "sampler.dpmpp_3m", "sampler.dpm_adaptive"}
OWN_ORDER_TEST |= {"sampler.evodiff"}  # no asymptotic order (test_evodiff.py)
# every default instance that draws no noise, plus noise-free configurations whose order differs from
# their class's default (other order parameters: test_ode_solvers.py, test_vp_samplers.py)
DETERMINISTIC = [(c.__node_kind__, c()) for c in all_sampler_classes()
                 if not c().draws_noise and c.__node_kind__ not in OWN_ORDER_TEST] + [
    ("flow_sde(scale=0,solver_order=1)", FlowSde(scale=0.0, solver_order=1)),
    ("flow_sde(scale=0)", FlowSde(scale=0.0)),
    ("plan(dpmpp_2m,heun)", Plan(switch_at=[4]).run([Dpmpp2M(), Heun()])),
    ("plan(heun,euler)", Plan(switch_at=[4]).run([Heun(), Euler()])),
]


def flow_reference(model, x: torch.Tensor) -> torch.Tensor:
    """x at SIGMA_END solving dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, eq. 4) with DOP853."""
    b, d = x.shape

    def rhs(sigma: float, y: np.ndarray) -> np.ndarray:
        xs = torch.from_numpy(y).reshape(b, d)  # (B, D)
        return ((xs - model(xs, torch.full((b,), sigma, dtype=F64))) / sigma).reshape(-1).numpy()

    sol = solve_ivp(rhs, (SIGMA_MAX, SIGMA_END), x.reshape(-1).numpy(), method="DOP853", rtol=1e-12, atol=1e-12)
    assert sol.success, sol.message
    return torch.from_numpy(sol.y[:, -1]).reshape(b, d)


def karras_to_end(steps: int) -> Sigmas:
    """`steps` Karras intervals from SIGMA_MAX to SIGMA_END, without the final step to 0."""
    return Sigmas(Karras(steps=steps + 1, sigma_min=SIGMA_END, sigma_max=SIGMA_MAX).run().values[:-1])


@pytest.fixture(scope="module")
def problem():
    model = ModelGMM().run()
    x = SIGMA_MAX * torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=F64)  # (B, 2)
    return model, x, flow_reference(model, x)


@pytest.mark.parametrize("sampler", [s for _, s in DETERMINISTIC], ids=[label for label, _ in DETERMINISTIC])
def test_convergence_order(sampler: Sampler, problem):
    """Median error over particles (rare mode-boundary paths are outliers) falls like steps^-step_order."""
    model, x, reference = problem
    errors = []
    for steps in STEP_COUNTS:
        out = run_steps(sampler, model, sampler.init(x, karras_to_end(steps)), NoiseSource(0)).x
        errors.append(float((out - reference).norm(dim=1).median()))
    slope = -np.polyfit(np.log(STEP_COUNTS), np.log(errors), 1)[0]
    assert abs(slope - sampler.step_order) < 0.3, (errors, slope)


def test_karras_schedule_formula():
    sigmas = Karras(steps=4, sigma_min=0.1, sigma_max=10.0, rho=3.0).run().values
    lo, hi = 0.1 ** (1 / 3), 10.0 ** (1 / 3)
    expected = [(hi + i / 3 * (lo - hi)) ** 3 for i in range(4)] + [0.0]
    assert sigmas.dtype == F64 and sigmas.tolist() == pytest.approx(expected, rel=1e-15, abs=0)
    assert Karras(steps=1).run().values.tolist() == [80.0, 0.0]
    default = Karras().run().values
    assert len(default) == 11 and default[0] == 80.0 and math.isclose(default[-2], 0.002, rel_tol=1e-12)


def test_karras_rejects_inverted_range():
    with pytest.raises(ValidationError) as info:
        Karras(sigma_min=100.0)
    assert info.value.errors()[0]["loc"] == ("sigma_max",) and "sigma_min" in str(info.value)


def load_k_diffusion_sampling(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """k_diffusion/sampling.py without the package __init__ (which imports torchvision and clip)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (parity test only)")
    for dep in ("scipy", "torchsde", "torchdiffeq", "tqdm"):
        pytest.importorskip(dep)
    root = Path(spec.submodule_search_locations[0])
    package, utils = types.ModuleType("k_diffusion"), types.ModuleType("k_diffusion.utils")
    package.__path__ = [str(root)]
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    package.utils = utils
    monkeypatch.setitem(sys.modules, "k_diffusion", package)
    monkeypatch.setitem(sys.modules, "k_diffusion.utils", utils)
    sampling_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", root / "sampling.py")
    sampling = importlib.util.module_from_spec(sampling_spec)
    sampling_spec.loader.exec_module(sampling)
    return sampling


@pytest.mark.parametrize("cls, name", [(Euler, "sample_euler"), (Heun, "sample_heun")])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_parity_with_k_diffusion(cls, name, dtype, monkeypatch):
    kd = load_k_diffusion_sampling(monkeypatch)
    model = ModelGMM().run()
    sigmas = kd.get_sigmas_karras(12, 0.002, 80.0, 7.0).to(F64)  # float32 ramp, as k-diffusion builds it
    x = 80.0 * torch.randn(256, 2, generator=torch.Generator().manual_seed(3), dtype=dtype)  # (B, 2)
    expected = getattr(kd, name)(model, x, sigmas.to(dtype), disable=True)
    sampler = cls()
    got = run_steps(sampler, model, sampler.init(x, Sigmas(sigmas)), NoiseSource(0)).x
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(Karras(steps=12).run().values, sigmas, rtol=1e-6, atol=0)
