"""NoiseSource and latent.noise: draws are a pure function of (seed, particle, step, slot)."""
import math

import pytest
import torch
from scipy import stats

from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import INITIAL_STEP, NoiseSource
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.latents.noise import LatentNoise

SHAPE = (3, 5)


def draw(particles, step=4, seed=7, slot=0, dtype=torch.float64):
    return NoiseSource(seed).normal(torch.as_tensor(particles), step, SHAPE, slot=slot, dtype=dtype)


def test_batch_split_and_order_do_not_change_draws():
    ids = list(range(10))
    whole = draw(ids)  # (10, 3, 5)
    one_by_one = torch.cat([draw([i]) for i in ids])
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    shuffled = draw(perm)
    assert torch.equal(whole, one_by_one)
    assert torch.equal(whole[perm], shuffled)


def test_per_particle_step_tensor_equals_scalar_step():
    ids = torch.arange(6)
    assert torch.equal(draw(ids, step=torch.full((6,), 4)), draw(ids, step=4))
    mixed = draw(ids, step=torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.equal(mixed[3], draw([3], step=0)[0]) and torch.equal(mixed[5], draw([5], step=2)[0])


@pytest.mark.parametrize("change", [{"seed": 8}, {"step": 5}, {"step": INITIAL_STEP}, {"slot": 1}])
def test_every_key_component_changes_the_draw(change):
    base = draw([0, 1, 2])
    other = draw([0, 1, 2], **change)
    assert not torch.isclose(base, other).any()


def test_particles_and_elements_are_uncorrelated():
    z = draw(torch.arange(4000)).reshape(4000, -1)  # (4000, 15)
    corr = torch.corrcoef(z.T)  # (15, 15) across elements of one particle
    off_diag = corr - torch.eye(15, dtype=corr.dtype)
    assert off_diag.abs().max() < 0.07  # 5 standard errors at n = 4000
    assert not torch.isclose(z[0], z[1]).any()


def test_draws_are_standard_normal():
    z = draw(torch.arange(20000)).flatten()  # 300,000 draws, fixed keys: deterministic
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    ks = stats.kstest(z.numpy(), "norm")
    assert ks.statistic < 2.0 / math.sqrt(n)  # the 0.1% critical value is 1.95 / sqrt(n)
    assert abs(float((z.abs() > 3).double().mean()) - 2 * stats.norm.sf(3)) < 5e-4


def test_dtype_device_and_like():
    z64 = draw([0, 1], dtype=torch.float64)
    z32 = draw([0, 1], dtype=torch.float32)
    assert z32.dtype == torch.float32 and z64.dtype == torch.float64
    assert torch.equal(z32, z64.float())
    x = torch.zeros(2, *SHAPE, dtype=torch.float32)
    like = NoiseSource(7).like(x, torch.tensor([0, 1]), 4)
    assert like.dtype == x.dtype and like.device == x.device and torch.equal(like, z32)
    assert NoiseSource(7).normal(torch.tensor([0]), 0, (2,), device="cpu").device == torch.device("cpu")


def latent(batch, shape=(2,), dtype="float32", seed=3, sigma_max=80.0):
    sigmas = Sigmas.of([sigma_max, 1.0, 0.0])
    return LatentNoise(batch=batch, shape=list(shape), dtype=dtype).run(sigmas, NodeContext.detached(seed=seed))


def test_latent_noise_is_scaled_typed_and_prefix_stable():
    x = latent(5, shape=(2, 3), dtype="float64", sigma_max=10.0)
    assert x.shape == (5, 2, 3) and x.dtype == torch.float64
    expected = 10.0 * NoiseSource(3).normal(torch.arange(5), INITIAL_STEP, (2, 3), dtype=torch.float64)
    assert torch.equal(x, expected)
    assert torch.equal(latent(2), latent(6)[:2])  # particle i's noise does not depend on the batch size
    assert latent(2).dtype == torch.float32 and not torch.equal(latent(2), latent(2, seed=4))
