"""DC-Solver (sampler.dc_solver, sampler.dc_solver_calibrate, sampler.dc_solver_regression): rho = 1 is
UniPC bit for bit; the Lagrange compensation is exact on polynomials; calibration on a few model.gmm
trajectories lowers the error to the exact ODE solution on them and on held-out starts; ratios are
reproducible and JSON data; errors name the parameter; the cascade regression is exact on ratios of its
own form."""
import json

import pytest
import torch
from pydantic import ValidationError

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dc_solver import CompensationRatios, DcSolver, lagrange_at
from samplegraph.nodes.samplers.dc_solver_calibrate import DcSolverCalibrate
from samplegraph.nodes.samplers.dc_solver_regression import DcSolverRegression
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.unipc import UniPC
from samplegraph.nodes.schedules.karras import Karras
from helpers_calibrated import dop853

F64 = torch.float64
SIGMA_MIN = 0.002


def start(n: int, seed: int) -> torch.Tensor:
    return 80.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)  # (n, 2)


def karras(steps: int) -> Sigmas:
    return Sigmas(Karras(steps=steps + 1, sigma_min=SIGMA_MIN, sigma_max=80.0).run().values[:-1])


def solve(sampler, model, x: torch.Tensor, sigmas: Sigmas) -> torch.Tensor:
    return run_steps(sampler, model, sampler.init(x, sigmas), NoiseSource(0)).x


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("final_zero", [False, True])
def test_ratio_one_is_unipc_bit_for_bit(order, final_zero):
    model, x = ModelGMM().run(), start(64, 0)
    sigmas = Karras(steps=7, sigma_min=SIGMA_MIN, sigma_max=80.0).run() if final_zero else karras(7)
    plain = solve(UniPC(solver_order=order), model, x, sigmas)
    for dc in (DcSolver(solver_order=order, dc_order=1), DcSolver(solver_order=order, dc_order=1,
                                                                  ratios=[1.0] * sigmas.steps)):
        assert torch.equal(solve(dc, model, x, sigmas), plain)


def test_lagrange_compensation_is_exact_on_polynomials():
    nodes = [torch.tensor([2.0, 1.0], dtype=F64), torch.tensor([1.5, 0.0], dtype=F64),
             torch.tensor([0.7, -1.0], dtype=F64)]
    poly = lambda t: (3 * t ** 2 - t + 2)[:, None] * torch.ones(1, 4, dtype=F64)  # noqa: E731 (B, 4)
    target = torch.tensor([1.8, 0.3], dtype=F64)
    assert torch.allclose(lagrange_at(target, nodes, [poly(n) for n in nodes]), poly(target), atol=1e-12)


@pytest.fixture(scope="module")
def calibrated():
    """Ratios of UniPC-3 (+UniC) on 8 trajectories, 8 Karras steps, and the errors they give.
    Measured: calibration set 0.97 -> 0.23, held-out (256 starts) 0.74 -> 0.22."""
    model, sigmas, cal, held = ModelGMM().run(), karras(8), start(8, 1), start(256, 2)
    dc = DcSolver(solver_order=3)
    ratios = DcSolverCalibrate().run(model, sigmas, cal, dc)
    return model, sigmas, cal, held, dc, ratios


def test_calibration_lowers_the_error_on_calibration_and_held_out_trajectories(calibrated):
    model, sigmas, cal, held, dc, ratios = calibrated
    for x in (cal, held):
        reference = dop853(model, x, 80.0, SIGMA_MIN)
        before = (solve(dc, model, x, sigmas) - reference).norm(dim=1).mean()
        after = (solve(dc.run(ratios), model, x, sigmas) - reference).norm(dim=1).mean()
        assert after < 0.5 * before, (float(before), float(after))


def test_ratios_are_reproducible_json_and_skip_the_warm_up(calibrated):
    model, sigmas, cal, _, dc, ratios = calibrated
    assert ratios == DcSolverCalibrate().run(model, sigmas, cal, dc)
    tensors, meta = ratios.cache_encode()
    assert CompensationRatios.cache_decode(tensors, json.loads(json.dumps(meta))) == ratios
    assert ratios.ratios[:dc.dc_order] == (1.0,) * dc.dc_order and len(ratios.ratios) == sigmas.steps
    assert any(r != 1.0 for r in ratios.ratios)


def test_errors_name_the_parameter():
    with pytest.raises(NodeError, match="'ratios' has 3 entries"):
        DcSolver(ratios=[1.0, 1.0, 1.0]).init(start(2, 0), karras(5))
    with pytest.raises(ValidationError, match="dc_order"):
        DcSolver(solver_order=1, dc_order=2)
    with pytest.raises(NodeError, match="'sampler' must be a sampler.dc_solver"):
        DcSolverCalibrate().run(ModelGMM().run(), karras(5), start(2, 0), Euler())
    with pytest.raises(ValidationError, match="must contain 1"):
        DcSolverCalibrate(rho_min=1.1)


def test_cascade_regression_recovers_ratios_of_its_own_form():
    """Ratios that follow the cascade exactly (quadratic in step/NFE, coefficients quadratic in NFE/50) are
    predicted exactly for an unseen NFE; the first two steps stay 1."""
    def rho(step: int, nfe: int) -> float:
        x, v = step / nfe, nfe / 50
        return (1 + 0.1 * v - 0.2 * v ** 2) + (0.3 - 0.5 * v) * x + (-0.4 + 0.6 * v ** 2) * x ** 2

    cals = [CompensationRatios(tuple(1.0 if s < 3 else rho(s, n) for s in range(1, n + 1)),
                               tuple(karras(n).values.tolist())) for n in (5, 8, 12, 20)]
    got = DcSolverRegression().run(cals, karras(10))
    assert got.ratios[:2] == (1.0, 1.0) and got.sigmas == tuple(karras(10).values.tolist())
    assert max(abs(g - rho(s, 10)) for s, g in enumerate(got.ratios[2:], start=3)) < 1e-12


def test_cascade_regression_needs_three_step_counts():
    cals = [CompensationRatios((1.0,) * n, tuple(karras(n).values.tolist())) for n in (5, 8)]
    with pytest.raises(NodeError, match="at least 3 different step counts"):
        DcSolverRegression().run(cals, karras(10))
