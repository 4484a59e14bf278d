"""sampler.hb and sampler.ghvb (Wizadwongsa et al. 2023): beta = 1 is the base method bit for bit,
the convergence orders the paper states (HB first order; GHVB order k, consistency of its weights),
and the divergence damping on the linear test equation where PLMS-4 blows up."""
import math

import pytest
import torch
from pydantic import ValidationError

from samplegraph.nodes.core.denoiser import FunctionDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.ghvb import Ghvb
from samplegraph.nodes.samplers.hb import HeavyBall
from samplegraph.nodes.samplers.ipndm import Ipndm
from samplegraph.nodes.samplers.momentum import ghvb_weights
from samplegraph.nodes.schedules.karras import Karras
from test_ode_solvers import problem, slope  # noqa: F401 (problem is a fixture)
from test_samplers import karras_to_end

F64 = torch.float64


def run(sampler: Sampler, x: torch.Tensor, sigmas: Sigmas, denoise=None) -> torch.Tensor:
    denoise = denoise or ModelGMM().run()
    return run_steps(sampler, denoise, sampler.init(x, sigmas), NoiseSource(0)).x


BASES = [(HeavyBall(base="euler", beta=1.0), Euler()), (HeavyBall(base="dpmpp_2m", beta=1.0), Dpmpp2M()),
         *[(HeavyBall(base="plms", beta=1.0, solver_order=k), Ipndm(solver_order=k)) for k in (1, 2, 3, 4)],
         *[(Ghvb(solver_order=k, beta=1.0), Ipndm(solver_order=k)) for k in (1, 2, 3, 4)]]


@pytest.mark.parametrize("sampler, base", BASES, ids=[f"{s.__node_kind__}-{s.model_dump()}" for s, _ in BASES])
def test_beta_one_is_the_base_method_bit_for_bit(sampler, base):
    x = 80.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    sigmas = Karras(steps=10).run()  # ends at sigma 0: the bases' last-step rules too
    torch.testing.assert_close(run(sampler, x, sigmas), run(base, x, sigmas), rtol=0, atol=0)
    assert sampler.step_order == base.step_order


def test_ghvb_of_order_one_is_heavy_ball_on_euler():
    """Up to the last step: to sigma 0 GHVB returns x0 (sampler.ipndm's rule), HB on Euler steps."""
    x = 80.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    sigmas = karras_to_end(10)
    torch.testing.assert_close(run(Ghvb(solver_order=1, beta=0.4), x, sigmas),
                               run(HeavyBall(base="euler", beta=0.4), x, sigmas), rtol=0, atol=1e-12)


def test_momentum_changes_the_result():
    x = 80.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    sigmas = Karras(steps=10).run()
    for sampler, base in BASES[:3]:
        moved = run(sampler.model_copy(update={"beta": 0.7}), x, sigmas) - run(base, x, sigmas)
        assert float(moved.norm(dim=1).median()) > 1e-3


# HB with beta < 1 is first order whatever the base (Theorem 1); GHVB's fixed weights and Euler
# start give min(k, 2) on Karras' grid, as sampler.ipndm.
ORDERS = [*[(HeavyBall(base=b, beta=0.5), 1) for b in ("euler", "plms", "dpmpp_2m")],
          *[(Ghvb(solver_order=k, beta=0.5), min(k, 2)) for k in (1, 2, 3)]]


@pytest.mark.parametrize("sampler, order", ORDERS, ids=[f"{s.__node_kind__}-{s.model_dump()}" for s, _ in ORDERS])
def test_convergence_order(sampler, order, problem):  # noqa: F811
    assert sampler.step_order == order
    assert abs(slope(sampler, problem, [32, 64, 128, 256]) - order) < 0.2


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("beta", [0.3, 0.7, 1.0])
def test_ghvb_weights_are_consistent_of_order_k(k, beta):
    """On unit steps, with slopes e_n = p(n) for a polynomial p of degree < k and the velocity's average
    past its transient, sum_j w_j v_{-j} is the integral of p over [0, 1]: the local order is k."""
    for degree in range(k):
        def p(t: float) -> float:
            return (t + 0.5) ** degree
        v = p(-400.0)
        history = []
        for n in range(-399, 1):
            v = (1 - beta) * v + beta * p(float(n))
            history.insert(0, v)
        got = sum(w * h for w, h in zip(ghvb_weights(k, beta), history))
        exact = (1.5 ** (degree + 1) - 0.5 ** (degree + 1)) / (degree + 1)
        assert abs(got - exact) < 1e-9 * max(1.0, exact), (degree, got, exact)


def test_momentum_damps_the_divergence_of_plms():
    """The linear test equation dx/dsigma = kappa x / sigma (eps = kappa x / sigma; exact x ~ sigma^kappa)
    on 20 geometric steps, h * lambda = kappa (r - 1) = -0.58, outside PLMS-4's stability interval:
    PLMS-4 blows up, HB(PLMS-4) and GHVB-4 with beta = 0.5 decay towards the exact 1e-6."""
    kappa = 2.0
    denoise = FunctionDenoiser(lambda x, sigma: (1 - kappa) * x)
    sigmas = Sigmas.of(torch.logspace(math.log10(80.0), math.log10(0.08), 21, dtype=F64).tolist())
    x = torch.ones(1, 1, dtype=F64)
    final = {label: float(run(s, x, sigmas, denoise).abs().max()) for label, s in
             [("plms4", Ipndm()), ("hb", HeavyBall(base="plms", beta=0.5)), ("ghvb", Ghvb(solver_order=4, beta=0.5)),
              ("ghvb-0.8", Ghvb(solver_order=4, beta=0.8))]}
    assert final["plms4"] > 1.0, final  # diverged: larger than the start
    assert final["hb"] < 1e-4 and final["ghvb"] < 1e-2, final
    assert final["ghvb"] < final["ghvb-0.8"] < final["plms4"], final  # less momentum weight, more damping


def test_solver_order_only_for_plms():
    assert HeavyBall().solver_order == 4 and HeavyBall(base="euler").solver_order is None
    with pytest.raises(ValidationError, match="solver_order applies to base 'plms' only"):
        HeavyBall(base="euler", solver_order=2)
    with pytest.raises(ValidationError):
        Ghvb(beta=0.0)
