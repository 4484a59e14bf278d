"""The contract every sampler keeps (DESIGN.md, "Sampler"): shapes and dtypes, determinism,
batch-split invariance, state indexing, per-particle noise levels and NFE accounting."""
import pytest
import torch

from samplegraph.nodes import builtin_nodes
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import CountingDenoiser, Denoiser, FunctionDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.state import State, bcast
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.schedules.karras import Karras

F64 = torch.float64
SIGMAS = Karras(steps=6, sigma_min=0.02, sigma_max=10.0).run()
NOISE = NoiseSource(5)


def all_sampler_classes() -> list[type[Sampler]]:
    """Every built-in Sampler node; the ones written so far while the built-in list is empty."""
    found = [c for c in builtin_nodes() if isinstance(c, type) and issubclass(c, Sampler)]
    return found or [Euler, Heun]


SAMPLERS = all_sampler_classes()
each_sampler = pytest.mark.parametrize("cls", SAMPLERS, ids=[c.__node_kind__ for c in SAMPLERS])


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
def test_shapes_and_dtypes_are_kept(cls, dtype, shape):
    denoise = ModelGMM().run() if shape == (2,) else gaussian()
    state = solve(cls(), start(5, shape, dtype), denoise)
    assert state.x.shape == (5, *shape) and state.x.dtype == dtype
    assert state.denoised.shape == (5, *shape) and state.denoised.dtype == dtype
    assert bool(state.done.all()) and (state.step == state.sigmas.numel() - 1).all()  # restart expands the schedule
    assert torch.isfinite(state.x).all()


@each_sampler
def test_deterministic_for_a_seed(cls):
    a, b = solve(cls(), start()).x, solve(cls(), start()).x
    assert torch.equal(a, b)
    if cls.stochastic:
        assert not torch.equal(a, solve(cls(), start(), noise=NoiseSource(6)).x)


@each_sampler
def test_batch_split_and_order_invariance(cls):
    x = start(6)
    whole = solve(cls(), x).x
    singles = torch.cat([solve(cls(), x[i:i + 1], particle=torch.tensor([i])).x for i in range(6)])
    perm = torch.tensor([3, 5, 0, 1, 4, 2])
    shuffled = solve(cls(), x[perm], particle=perm).x
    torch.testing.assert_close(singles, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shuffled, whole[perm], rtol=1e-12, atol=1e-12)


@each_sampler
def test_gather_then_continue_equals_continue_then_gather(cls):
    sampler, idx = cls(), torch.tensor([4, 0, 0, 2])
    mid = advance(sampler, sampler.init(start(), SIGMAS), 3)
    rest = SIGMAS.steps - 3
    torch.testing.assert_close(advance(sampler, mid[idx], rest).x, advance(sampler, mid, rest).x[idx],
                               rtol=1e-12, atol=1e-12)
    halves = State.cat([mid[:2], mid[2:]])
    torch.testing.assert_close(advance(sampler, halves, rest).x, advance(sampler, mid, rest).x, rtol=0, atol=0)


@each_sampler
def test_particles_at_different_noise_levels_share_a_step(cls):
    sampler = cls()
    steps = sampler.init(start(1), SIGMAS).sigmas.numel() - 1  # SIGMAS.steps, or more where init expands it
    late = advance(sampler, sampler.init(start(3), SIGMAS), steps - 1)  # next step goes to 0
    early = advance(sampler, sampler.init(start(3), SIGMAS, torch.arange(3, 6)), 1)
    mixed = sampler.step(ModelGMM().run(), State.cat([late, early]), NOISE)
    apart = State.cat([advance(sampler, late, 1), advance(sampler, early, 1)])
    torch.testing.assert_close(mixed.x, apart.x, rtol=1e-12, atol=1e-12)
    assert mixed.step.tolist() == apart.step.tolist() == [steps] * 3 + [2] * 3


@each_sampler
def test_nfe_per_step_is_declared(cls):
    sampler = cls()
    counted = CountingDenoiser(ModelGMM().run())
    state = sampler.init(start(), SIGMAS)
    per_step = []
    while not bool(state.done.all()):
        before, final = counted.calls, bool((state.sigma_next == 0).all())
        up = bool((state.sigma_next > state.sigma).all())  # a jump up in noise (restart) calls no model
        state = sampler.step(counted, state, NOISE)
        per_step.append((counted.calls - before, final, up))
    # an adaptive solver (dpm_adaptive) takes as many attempts as a step needs, each nfe_per_step calls
    fits = (lambda n: n > 0 and n % cls.nfe_per_step == 0) if getattr(cls, "adaptive", False) else \
        (lambda n: n == cls.nfe_per_step)
    assert all(fits(n) for n, final, up in per_step if not (final or up))
    assert all(1 <= n <= cls.nfe_per_step for n, final, _ in per_step if final)
    assert all(n == 0 for n, _, up in per_step if up)
    ctx = NodeContext.detached()
    run_steps(sampler, ModelGMM().run(), sampler.init(start(), SIGMAS), NOISE, ctx)
    assert ctx.metrics["nfe"] == counted.calls == sum(n for n, _, _ in per_step)


def test_declared_orders_and_costs():
    assert (Euler.order, Euler.nfe_per_step, Heun.order, Heun.nfe_per_step) == (1, 1, 2, 2)
    assert not Euler.stochastic and not Heun.stochastic
