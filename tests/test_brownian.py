"""The Brownian tree (nodes/core/brownian.py): each particle's path W(sigma) is a pure function
of (seed, particle, sigma) with the law of Brownian motion, so SDE solvers see one path
whatever their step count. Statistical checks use fixed keys: they are deterministic."""
import math

import pytest
import torch
from scipy import stats

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.brownian import SIGMA_HI, T_LO, brownian_path
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpmpp_2m_sde import Dpmpp2MSde
from samplegraph.nodes.schedules.karras import Karras

F64 = torch.float64
N = 20000


def increment(sigma, sigma_next, particles=N, seed=0, shape=(1,), dtype=F64):
    """Normalised increments (P, *shape) of particles 0..P-1 over sigma -> sigma_next (scalars or (P,))."""
    p = torch.arange(particles) if isinstance(particles, int) else torch.as_tensor(particles)
    full = lambda v: torch.as_tensor(v, dtype=F64).expand(p.shape[0])  # noqa: E731
    return NoiseSource(seed).brownian(p, full(sigma), full(sigma_next), shape, dtype)


def raw(sigma, sigma_next, **kw):
    """The unnormalised increment W(sigma_next) - W(sigma)."""
    scale = (torch.as_tensor(sigma_next, dtype=F64) - torch.as_tensor(sigma, dtype=F64)).abs().sqrt()
    z = increment(sigma, sigma_next, **kw)
    return z * scale.reshape(-1, *([1] * (z.ndim - 1))) if scale.ndim else z * scale


def test_increments_over_disjoint_intervals_are_independent_standard_normals():
    levels = [80.0, 10.0, 1.0, 0.1, 0.0101, 0.01, 0.002]  # includes a 1% step: finer than most schedules
    z = torch.cat([increment(a, b) for a, b in zip(levels[:-1], levels[1:])], dim=1)  # (N, 6)
    se = 1 / math.sqrt(N)
    assert z.mean(0).abs().max() < 5 * se
    assert (z.var(0) - 1).abs().max() < 5 * math.sqrt(2) * se
    corr = torch.corrcoef(z.T) - torch.eye(z.shape[1], dtype=F64)  # (6, 6)
    assert corr.abs().max() < 5 * se
    for column in z.T:  # the 0.01% critical value: six columns, and every key is fixed
        assert stats.kstest(column.numpy(), "norm").statistic < 2.3 / math.sqrt(N)


def test_covariance_is_min_of_times():
    times = torch.tensor([0.01, 0.3, 2.0, 15.0, 80.0], dtype=F64)
    p = torch.arange(N).repeat_interleave(len(times))  # (N * T,)
    w = brownian_path(0, p, times.repeat(N), 1).reshape(N, len(times))  # (N, T)
    emp = w.T @ w / N  # (T, T) the mean is 0 by construction, not estimated
    true = torch.minimum(times[:, None], times[None, :]) - T_LO  # (T, T)
    se = torch.sqrt((true.diagonal()[:, None] * true.diagonal()[None, :] + true ** 2) / N)  # (T, T)
    assert ((emp - true).abs() < 5 * se).all(), (emp, true)


def test_increments_add_up_at_per_particle_times():
    gen = torch.Generator().manual_seed(0)
    c = 0.002 + torch.rand(64, generator=gen, dtype=F64) * 5  # (64,) each particle its own times
    b = c + torch.rand(64, generator=gen, dtype=F64) * 10
    a = b + torch.rand(64, generator=gen, dtype=F64) * 50
    kw = {"particles": 64, "shape": (3, 2)}
    torch.testing.assert_close(raw(a, c, **kw), raw(a, b, **kw) + raw(b, c, **kw), rtol=0, atol=1e-12)


def test_a_coarse_step_is_the_sum_of_the_fine_steps_refining_it():
    coarse = Karras(steps=8, sigma_min=0.002, sigma_max=80.0).run().values[:-1]  # (8,) 7 steps
    fine = Karras(steps=29, sigma_min=0.002, sigma_max=80.0).run().values[:-1]  # (29,) every coarse level, 3 between
    torch.testing.assert_close(fine[::4], coarse, rtol=1e-14, atol=0)
    kw = {"particles": 256, "shape": (4,)}
    for i in range(7):
        fine_sum = sum(raw(fine[j], fine[j + 1], **kw) for j in range(4 * i, 4 * i + 4))
        torch.testing.assert_close(raw(coarse[i], coarse[i + 1], **kw), fine_sum, rtol=0, atol=1e-9)


def test_batch_split_order_and_dtype_do_not_change_draws():
    p = torch.arange(10)
    sigma = torch.linspace(0.5, 20.0, 10, dtype=F64)  # (10,) per-particle times
    nxt = sigma * 0.7
    src = NoiseSource(4)
    whole = src.brownian(p, sigma, nxt, (2, 3), F64)
    singles = torch.cat([src.brownian(p[i:i + 1], sigma[i:i + 1], nxt[i:i + 1], (2, 3), F64) for i in range(10)])
    perm = torch.tensor([7, 2, 9, 0, 4, 1, 8, 3, 6, 5])
    assert torch.equal(singles, whole)
    assert torch.equal(src.brownian(p[perm], sigma[perm], nxt[perm], (2, 3), F64), whole[perm])
    assert torch.equal(src.brownian(p, sigma, nxt, (2, 3), torch.float32), whole.float())
    assert whole.shape == (10, 2, 3)


def test_deterministic_and_keyed_by_seed_particle_and_time():
    a = increment(5.0, 4.0, particles=2000)
    assert torch.equal(a, increment(5.0, 4.0, particles=2000))
    for other in (increment(5.0, 4.0, particles=2000, seed=1), increment(5.0, 4.0, particles=range(1, 2001)),
                  increment(6.0, 5.0, particles=2000)):
        assert abs(float(torch.corrcoef(torch.stack([a.flatten(), other.flatten()]))[0, 1])) < 0.1
    steps = NoiseSource(0).normal(torch.arange(2000), 0, (1,), dtype=F64)  # per-step draws: another stream
    assert abs(float(torch.corrcoef(torch.stack([a.flatten(), steps.flatten()]))[0, 1])) < 0.1


def test_domain_edges():
    assert torch.equal(increment(0.01, 0.0, particles=8), increment(0.01, T_LO, particles=8))  # 0 reads SIGMA_LO
    below = brownian_path(0, torch.arange(3), torch.tensor([0.0, 1e-9, T_LO]), 2)  # W = 0 up to SIGMA_LO
    assert torch.equal(below, torch.zeros(3, 2, dtype=F64))
    assert torch.equal(increment(3.0, 3.0, particles=8), torch.zeros(8, 1, dtype=F64))
    assert torch.equal(raw(2.0, 1.0, particles=8), -raw(1.0, 2.0, particles=8))  # a signed increment
    with pytest.raises(NodeError, match="noise='step'"):
        increment(SIGMA_HI * 2, 1.0, particles=2)


def test_an_sde_solution_converges_under_refinement_on_one_path():
    """With the Brownian tree, more steps approach one solution (strong convergence); with fresh
    normals per step, each step count samples a different trajectory."""
    model = ModelGMM().run()
    x = 20.0 * NoiseSource(1).normal(torch.arange(256), -1, (2,), dtype=F64)  # (256, 2)

    def solve(steps: int, noise: str) -> torch.Tensor:
        sampler = Dpmpp2MSde(noise=noise)
        sigmas = Karras(steps=steps, sigma_min=0.01, sigma_max=20.0).run()
        return run_steps(sampler, model, sampler.init(x, sigmas), NoiseSource(0)).x

    gap = {}
    for noise in ("brownian", "step"):
        runs = [solve(n, noise) for n in (25, 50, 100, 200)]
        gap[noise] = [float((a - b).norm(dim=1).median()) for a, b in zip(runs[:-1], runs[1:])]
    assert gap["brownian"][2] < gap["brownian"][0] / 2, gap
    assert gap["brownian"][2] < gap["step"][2] / 10, gap


def test_lockstep_and_mixed_batches_draw_the_same_increments():
    """Particles in lockstep share one path geometry (no gather); in a batch with other times they
    are gathered: a particle's increment is bit-identical either way, for any sample shape."""
    p = torch.arange(40)
    src = NoiseSource(2)
    for shape in ((3,), (2, 2), (1,)):
        lockstep = src.brownian(p, torch.tensor(7.0), torch.tensor(5.5), shape, F64)  # (40, *shape)
        sigma = torch.where(p % 3 == 0, 7.0, torch.linspace(0.1, 30.0, 40, dtype=F64))  # (40,) a third at 7.0
        nxt = torch.where(p % 3 == 0, 5.5, sigma * 0.8)
        mixed = src.brownian(p, sigma, nxt, shape, F64)
        assert torch.equal(mixed[p % 3 == 0], lockstep[p % 3 == 0])
        assert not torch.isclose(mixed[p % 3 != 0], lockstep[p % 3 != 0]).any()
