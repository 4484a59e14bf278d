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


def test_neighbouring_particles_steps_slots_and_pairs_are_uncorrelated():
    """Each element pairs with its Box-Muller partner (2p, 2p + 1) and with the same element of the
    next particle, step and slot: all uncorrelated, and the partners independent (squares too)."""
    ids = torch.arange(20000)
    z = draw(ids, seed=3).reshape(20000, -1)  # (N, 15)
    others = [draw(ids + 1, seed=3), draw(ids, step=5, seed=3), draw(ids, slot=1, seed=3)]
    pairs = [(z, o.reshape(20000, -1)) for o in others] + [(z[:, 0:14:2], z[:, 1:14:2])]
    pairs.append((z[:, 0:14:2] ** 2, z[:, 1:14:2] ** 2))  # r cos and r sin share r: independent all the same
    for a, b in pairs:
        a, b = a.flatten(), b.flatten()
        corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        assert abs(corr) < 5 / math.sqrt(a.numel()), corr


def test_blocks_and_odd_lengths_do_not_change_draws(monkeypatch):
    """Rows cut into blocks of any size (here 5 hashes), odd lengths and every alignment in the
    block draw the same values; a longer row extends a shorter one."""
    from samplegraph.nodes.core import noise

    src, ids = NoiseSource(11), torch.arange(37)
    whole = src.normal(ids, 2, (7,), dtype=torch.float64)  # (37, 7)
    longer = src.normal(ids, 2, (10,), dtype=torch.float64)  # (37, 10)
    monkeypatch.setattr(noise, "CHUNK", 5)
    assert torch.equal(src.normal(ids, 2, (7,), dtype=torch.float64), whole)
    assert torch.equal(torch.cat([src.normal(ids[i:i + 3], 2, (7,), dtype=torch.float64) for i in range(0, 37, 3)]),
                       whole)
    assert torch.equal(longer[:, :7], whole)


def test_draws_stay_inside_the_stated_tail_bound():
    z = draw(torch.arange(20000), dtype=torch.float64)
    assert float(z.abs().max()) <= math.sqrt(66 * math.log(2))


def uniforms(particles, kind="uniform", step=4, seed=7, slot=0, dtype=torch.float64, shape=SHAPE):
    return getattr(NoiseSource(seed), kind)(torch.as_tensor(particles), step, shape, slot=slot, dtype=dtype)


@pytest.mark.parametrize("kind", ["uniform", "gumbel"])
def test_uniform_and_gumbel_are_batch_split_and_order_invariant(kind):
    ids = torch.arange(10)
    whole = uniforms(ids, kind)  # (10, 3, 5)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([uniforms([i], kind) for i in ids]), whole)
    assert torch.equal(uniforms(perm, kind), whole[perm])
    steps = torch.tensor([0, 4, 1, 4, 2, 4, 3, 4, 0, 4])
    mixed = uniforms(ids, kind, step=steps)
    assert torch.equal(mixed[1::2], whole[1::2]) and torch.equal(mixed[2], uniforms([2], kind, step=1)[0])
    assert whole.dtype == torch.float64 and not torch.isclose(whole, uniforms(ids, kind, slot=1)).any()


def test_uniform_and_gumbel_have_their_laws():
    u = uniforms(torch.arange(20000)).flatten()  # 300,000 draws
    n = u.numel()
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert stats.kstest(u.numpy(), "uniform").statistic < 2.0 / math.sqrt(n)
    g = uniforms(torch.arange(20000), "gumbel").flatten()
    assert torch.equal(g, -torch.log(-torch.log(u)))
    assert stats.kstest(g.numpy(), "gumbel_r").statistic < 2.0 / math.sqrt(n)
    normals = draw(torch.arange(20000)).flatten()  # the same keys' normals: another stream
    assert abs(float(torch.corrcoef(torch.stack([u, normals]))[0, 1])) < 5 / math.sqrt(n)
    u32 = uniforms(torch.arange(2000), dtype=torch.float32)
    assert u32.dtype == torch.float32 and 0 < float(u32.min()) and float(u32.max()) < 1


def test_gumbel_max_draws_the_categorical():
    """argmax(logits + Gumbel) over a token's vocabulary is a draw from softmax(logits)."""
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64)
    g = NoiseSource(5).gumbel(torch.arange(40000), 17, (4,))  # (N, 4): one token position, many particles
    freq = torch.bincount((logits + g).argmax(1), minlength=4).double() / 40000
    p = torch.softmax(logits, 0)
    assert ((freq - p).abs() < 5 * (p * (1 - p) / 40000).sqrt()).all(), (freq, p)


def test_all_zero_keys_are_not_a_fixed_point():
    """mix64(0) = 0: seed 0, step 0, slot 0, particle 0 must still draw ordinary values, not the
    extreme radius and zero angle of an all-zero hash."""
    src = NoiseSource(0)
    z = src.normal(torch.tensor([0]), 0, (8,), dtype=torch.float64)[0]  # (8,)
    assert float(z.abs().max()) < 5 and bool((z != 0).all()), z
    u = src.uniform(torch.tensor([0]), 0, (8,))[0]
    assert float(u.min()) > 1e-9 and float(u.max()) < 1 - 1e-9, u
