"""The contract every sampler keeps (docs/ARCHITECTURE.md, "The contracts"): shapes and dtypes, determinism,
batch-split invariance, state indexing, per-particle noise levels and NFE accounting, for every
registered sampler's default instance and for samplers the wrapper nodes build at run time; and
the instance metadata (draws_noise, step_nfe) pinned to what a run does."""
import pytest
import torch

from samplegraph.nodes import builtin_nodes
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import CountingDenoiser, Denoiser, FunctionDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.state import State, bcast
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.ddim import Ddim
from samplegraph.nodes.samplers.dpm_2 import Dpm2
from samplegraph.nodes.samplers.dpm_2_ancestral import Dpm2Ancestral
from samplegraph.nodes.samplers.dpm_adaptive import DpmAdaptive
from samplegraph.nodes.samplers.dpm_solver import DpmSolver
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.dpmpp_2m_sde import Dpmpp2MSde
from samplegraph.nodes.samplers.dpmpp_2s_ancestral import Dpmpp2SAncestral
from samplegraph.nodes.samplers.dpmpp_3m_sde import Dpmpp3MSde
from samplegraph.nodes.samplers.dpmpp_sde import DpmppSde
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.euler_ancestral import EulerAncestral
from samplegraph.nodes.samplers.flow_sde import FlowSde
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.samplers.iia import Iia
from samplegraph.nodes.samplers.plan import Plan, Planned
from samplegraph.nodes.samplers.pndm import Pndm
from samplegraph.nodes.samplers.restart import Restart
from samplegraph.nodes.samplers.time_shift import TimeShift
from samplegraph.nodes.schedules.karras import Karras

F64 = torch.float64
SIGMAS = Karras(steps=6, sigma_min=0.02, sigma_max=10.0).run()
NOISE = NoiseSource(5)


def all_sampler_classes() -> list[type[Sampler]]:
    """Every built-in Sampler node; the ones written so far while the built-in list is empty."""
    found = [c for c in builtin_nodes() if isinstance(c, type) and issubclass(c, Sampler)]
    return found or [Euler, Heun]


def shifted(inner: Sampler) -> Sampler:
    return TimeShift(window=0.2, cutoff_sigma=0.5).run(inner)  # shifts the calls above sigma 0.5 on SIGMAS


# Samplers that wrapper nodes build at run time (no registered class of their own): the suite
# reaches them through these instances. Plans switch inside SIGMAS' 6 steps.
WRAPPED = [("time_shift(euler)", shifted(Euler())), ("time_shift(heun)", shifted(Heun())),
           ("time_shift(dpmpp_2m)", shifted(Dpmpp2M())),
           ("plan(euler,dpmpp_2m)", Plan(switch_at=[2]).run([Euler(), Dpmpp2M()])),
           ("plan(heun,euler)", Plan(switch_at=[3]).run([Heun(), Euler()])),
           ("plan(dpmpp_2m,euler_ancestral)", Plan(switch_at=[3]).run([Dpmpp2M(), EulerAncestral()]))]
WRAPPED += [("iia(dpmpp_2m)", Iia(coefficients=[[0.0, 0.0], [0.3, 0.0], [0.2, -0.1]]).run(Dpmpp2M())),
            ("iia(euler)", Iia(coefficients=[[0.0, 0.0], [0.5, 0.0]]).run(Euler()))]  # sampler.iia's wrappers
SAMPLERS = [(c.__node_kind__, c()) for c in all_sampler_classes()] + WRAPPED


def cases(pairs: list[tuple[str, Sampler]]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("sampler", [s for _, s in pairs], ids=[label for label, _ in pairs])


each_sampler = cases(SAMPLERS)


def gaussian(std: float = 0.7) -> Denoiser:
    """The exact denoiser of N(0, std^2 I) data, for any sample shape."""
    return FunctionDenoiser(lambda x, sigma: x * (std ** 2 / (std ** 2 + bcast(sigma, x) ** 2)))


def start(n: int = 6, shape: tuple[int, ...] = (2,), dtype: torch.dtype = F64) -> torch.Tensor:
    return SIGMAS.sigma_max * NoiseSource(1).normal(torch.arange(n), -1, shape, dtype=dtype)  # (n, *shape)


def solve(sampler: Sampler, x: torch.Tensor, denoise: Denoiser | None = None, particle=None,
          noise: NoiseSource = NOISE) -> State:
    denoise = denoise or ModelGMM().run()
    return run_steps(sampler, denoise, sampler.init(x, SIGMAS, particle), noise)


def advance(sampler: Sampler, state: State, steps: int, denoise: Denoiser | None = None) -> State:
    denoise = denoise or ModelGMM().run()
    for _ in range(steps):
        state = sampler.step(denoise, state, NOISE)
    return state


@each_sampler
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("shape", [(2,), (3, 4, 4)])
def test_shapes_and_dtypes_are_kept(sampler, dtype, shape):
    denoise = ModelGMM().run() if shape == (2,) else gaussian()
    state = solve(sampler, start(5, shape, dtype), denoise)
    assert state.x.shape == (5, *shape) and state.x.dtype == dtype
    assert state.denoised.shape == (5, *shape) and state.denoised.dtype == dtype
    assert bool(state.done.all()) and (state.step == state.sigmas.numel() - 1).all()  # restart expands the schedule
    assert torch.isfinite(state.x).all()


# Parameters that turn noise on or off: draws_noise must follow them.
NOISE_CASES = [("heun(s_churn=1)", Heun(s_churn=1.0)), ("dpm_2(s_churn=1)", Dpm2(s_churn=1.0)),
               ("heun(s_churn=1,s_noise=0)", Heun(s_churn=1.0, s_noise=0.0)), ("ddim(eta=0.5)", Ddim(eta=0.5)),
               ("euler_ancestral(eta=0)", EulerAncestral(eta=0.0)), ("dpm_2_ancestral(eta=0)", Dpm2Ancestral(eta=0.0)),
               ("dpmpp_2s_ancestral(s_noise=0)", Dpmpp2SAncestral(s_noise=0.0)),
               ("dpmpp_sde(eta=0)", DpmppSde(eta=0.0)),
               ("dpmpp_2m_sde(eta=0)", Dpmpp2MSde(eta=0.0)), ("dpmpp_3m_sde(eta=0)", Dpmpp3MSde(eta=0.0)),
               ("flow_sde(scale=0)", FlowSde(scale=0.0)), ("restart(s_noise=0)", Restart(s_noise=0.0)),
               ("restart(segments=[])", Restart(segments=[])),
               ("time_shift(heun(s_churn=1))", shifted(Heun(s_churn=1.0))),
               ("plan(euler,ddim(eta=1))", Plan(switch_at=[3]).run([Euler(), Ddim(eta=1.0)]))]


@cases(SAMPLERS + NOISE_CASES)
def test_deterministic_for_a_seed_and_draws_noise_iff_the_seed_matters(sampler):
    a, b = solve(sampler, start()).x, solve(sampler, start()).x
    assert torch.equal(a, b)
    assert (not torch.equal(a, solve(sampler, start(), noise=NoiseSource(6)).x)) == sampler.draws_noise


@each_sampler
def test_batch_split_and_order_invariance(sampler):
    x = start(6)
    whole = solve(sampler, x).x
    singles = torch.cat([solve(sampler, x[i:i + 1], particle=torch.tensor([i])).x for i in range(6)])
    perm = torch.tensor([3, 5, 0, 1, 4, 2])
    shuffled = solve(sampler, x[perm], particle=perm).x
    torch.testing.assert_close(singles, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shuffled, whole[perm], rtol=1e-12, atol=1e-12)


@each_sampler
def test_gather_then_continue_equals_continue_then_gather(sampler):
    idx = torch.tensor([4, 0, 0, 2])
    mid = advance(sampler, sampler.init(start(), SIGMAS), 3)
    rest = SIGMAS.steps - 3
    torch.testing.assert_close(advance(sampler, mid[idx], rest).x, advance(sampler, mid, rest).x[idx],
                               rtol=1e-12, atol=1e-12)
    halves = State.cat([mid[:2], mid[2:]])
    torch.testing.assert_close(advance(sampler, halves, rest).x, advance(sampler, mid, rest).x, rtol=0, atol=0)


@each_sampler
def test_particles_at_different_noise_levels_share_a_step(sampler):
    steps = sampler.init(start(1), SIGMAS).sigmas.numel() - 1  # SIGMAS.steps, or more where init expands it
    late = advance(sampler, sampler.init(start(3), SIGMAS), steps - 1)  # next step goes to 0
    early = advance(sampler, sampler.init(start(3), SIGMAS, torch.arange(3, 6)), 1)
    mixed = sampler.step(ModelGMM().run(), State.cat([late, early]), NOISE)
    apart = State.cat([advance(sampler, late, 1), advance(sampler, early, 1)])
    torch.testing.assert_close(mixed.x, apart.x, rtol=1e-12, atol=1e-12)
    assert mixed.step.tolist() == apart.step.tolist() == [steps] * 3 + [2] * 3


def declared_nfe(sampler: Sampler, step: int) -> int:
    """nfe_at(step), or for a plan the step_nfe of the sampler whose segment `step` is in (its step_nfe is their max)."""
    if isinstance(sampler, Planned):
        return sampler.samplers[sum(step >= s for s in sampler.switch_at)].step_nfe
    return sampler.nfe_at(step)


# Parameters that change the cost of a step: step_nfe must follow them.
NFE_CASES = [("dpm_solver(solver_order=1)", DpmSolver(solver_order=1)),
             ("dpm_solver(solver_order=2)", DpmSolver(solver_order=2)),
             ("dpm_adaptive(solver_order=2)", DpmAdaptive(solver_order=2)),
             ("pndm(warmup=plms)", Pndm(warmup="plms"))]


@cases(SAMPLERS + NFE_CASES)
def test_step_nfe_is_the_measured_cost_of_a_step(sampler):
    counted = CountingDenoiser(ModelGMM().run())
    state = sampler.init(start(), SIGMAS)
    per_step = []
    while not bool(state.done.all()):
        before, final = counted.calls, bool((state.sigma_next == 0).all())
        up = bool((state.sigma_next > state.sigma).all())  # a jump up in noise (restart) calls no model
        nfe = declared_nfe(sampler, int(state.step[0]))
        state = sampler.step(counted, state, NOISE)
        per_step.append((counted.calls - before, final, up, nfe))
    # an adaptive solver (dpm_adaptive) takes as many attempts as a step needs, each step_nfe calls
    fits = (lambda n, nfe: n > 0 and n % nfe == 0) if sampler.adapts_steps else (lambda n, nfe: n == nfe)
    assert all(fits(n, nfe) for n, final, up, nfe in per_step if not (final or up)), per_step
    assert all(1 <= n <= nfe for n, final, _, nfe in per_step if final)
    assert all(n == 0 for n, _, up, _ in per_step if up)
    ctx = NodeContext.detached()
    run_steps(sampler, ModelGMM().run(), sampler.init(start(), SIGMAS), NOISE, ctx)
    assert ctx.metrics["nfe"] == counted.calls == sum(n for n, _, _, _ in per_step)


@pytest.mark.parametrize("cls", all_sampler_classes(), ids=lambda c: c.__node_kind__)
def test_class_metadata_describes_the_default_instance(cls):
    sampler = cls()
    assert (sampler.step_order, sampler.step_nfe, sampler.draws_noise, sampler.adapts_steps) == \
        (cls.order, cls.nfe_per_step, cls.stochastic, cls.adaptive)


def test_declared_orders_and_costs():
    assert (Euler.order, Euler.nfe_per_step, Heun.order, Heun.nfe_per_step) == (1, 1, 2, 2)
    assert not Euler.stochastic and not Heun.stochastic and Heun(s_churn=1.0).draws_noise
