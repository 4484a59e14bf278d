"""model.ras (region-adaptive sampling, Liu et al. 2025) on a small random DiT and on the shipped
model.mnist_dit: ratio 1 is the plain model bit for bit; below 1 the focused tokens are exactly the
network's (attending to cached keys/values), the rest keep their cached noise prediction, the compute
count is honest, and the caches follow the particles through State.memory."""
import math

import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.accel.ras import ModelRAS, focus, token_scores
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.networks.dit import DiT, DiTConfig
from samplegraph.nodes.models.safetensors_model import mlp_model
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.schedules.karras import Karras


def random_dit(seed: int = 0) -> DiT:
    """A DiT whose zero-initialised layers (adaLN-Zero gates, head) are random, so every block matters."""
    torch.manual_seed(seed)
    net = DiT(DiTConfig(shape=[16, 16], patch=4, width=32, depth=3, heads=2, classes=10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return net.eval().requires_grad_(False)


def sample(model, n: int = 4, steps: int = 8, sampler=None, shape=(16, 16)):
    sigmas = Karras(steps=steps, sigma_min=0.002, sigma_max=80.0).run()
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(1)) * 80.0
    s = sampler or Euler()
    return run_steps(s, model, s.init(x, sigmas), NoiseSource(0))


@pytest.fixture(scope="module")
def model():
    return ModelCondition(label=3).run(mlp_model(random_dit()))


@pytest.mark.parametrize("sampler", [Euler(), Dpmpp2M()])
def test_ratio_one_is_bit_identical_to_the_plain_model(model, sampler):
    plain = sample(model, sampler=sampler).x
    ras = ModelRAS(ratio=1.0).run(model)
    assert torch.equal(sample(ras, sampler=sampler).x, plain)
    assert ras.stats.fraction == 1.0 and ras.stats.dense == 4 * 16 * 3 * 8


def test_focused_tokens_are_the_networks_with_cached_keys_and_the_rest_reuse_cached_eps(model):
    ras = ModelRAS(ratio=0.25, dense_calls=1).run(model)
    gen = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(2, 3, 16, 16, generator=gen) * 2.0  # (3, 16, 16) each
    s1, s2 = torch.full((3,), 2.0), torch.full((3,), 1.5)
    bound = ras.bound(())
    x0_first = bound(x1, s1)
    assert torch.equal(x0_first, model(x1, s1))  # the dense first call is the plain model
    mem = bound.state
    eps1 = (x1 - x0_first) / 2.0
    index = focus(token_scores(model.net, mem.eps, mem.drops, 0.1), math.ceil(0.25 * 16))  # (3, 4)
    x0 = bound(x2, s2)
    # reference: the focused tokens through each block, attending to [their fresh k/v | x1's k/v elsewhere]
    net = model.net
    c_in = (1.5 ** 2 + 0.25) ** -0.5
    h, e = net.embed(x2 * c_in, torch.log(s2) / 4, 3)
    h_old, _ = net.embed(x1 * (2.0 ** 2 + 0.25) ** -0.5, torch.log(s1) / 4, 3)
    e_old = net.embed(x1, torch.log(s1) / 4, 3)[1]
    for block in net.blocks:
        mod_old = block.modulation(e_old)
        _, k_old, v_old = block.keys_values(h_old, mod_old)
        h_old = block.finish(h_old, *block.keys_values(h_old, mod_old), mod_old)
        mod = block.modulation(e)
        q, k, v = block.keys_values(h, mod)
        keep = torch.zeros(3, 16, dtype=torch.bool).scatter(1, index, True)[:, None, :, None]
        k_mix, v_mix = torch.where(keep, k, k_old), torch.where(keep, v, v_old)
        h = block.finish(h, q, k_mix, v_mix, mod)
    f = net.head(h, e, x2)
    x0_net = 0.25 / (1.5 ** 2 + 0.25) * x2 + 1.5 * 0.5 / math.sqrt(1.5 ** 2 + 0.25) * f
    pixels = bound.pixel_mask(torch.zeros(3, 16, dtype=torch.bool).scatter(1, index, True), x2)
    assert torch.allclose(x0[pixels], x0_net[pixels], atol=1e-5)
    assert torch.allclose(x0[~pixels], (x2 - 1.5 * eps1)[~pixels], atol=1e-6)
    assert not torch.allclose(x0[pixels], model(x2, s2)[pixels], atol=1e-3)  # the cache matters
    assert torch.equal(bound.state.drops.sum(1), torch.full((3,), 12.0))  # 12 of 16 tokens left out once


def test_compute_fraction_counts_dense_calls_and_the_selected_tokens(model):
    ras = ModelRAS(ratio=0.5, dense_calls=2, dense_at=[5]).run(model)
    out = sample(ras, steps=8)
    dense_calls, sparse_calls = 3, 5
    assert ras.stats.fraction == pytest.approx((dense_calls + 0.5 * sparse_calls) / 8)
    assert out.x.shape == (4, 16, 16) and torch.isfinite(out.x).all()
    assert len(out.memory) == 3 + 2 * 3


def test_starvation_term_rotates_the_focus():
    scores_eps = torch.tensor([[4.0, 3.0, 2.0, 1.0]]).repeat_interleave(4, 1).reshape(1, 1, 16)
    net = random_dit()
    eps = scores_eps.reshape(1, 4, 4).repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :16, :16]
    drops = torch.zeros(1, 16)
    first = focus(token_scores(net, eps, drops, 0.1), 4)
    drops_many = drops.clone()
    drops_many[0, first[0]] = 0.0
    drops_many[0, [i for i in range(16) if i not in first[0].tolist()]] = 30.0
    assert set(focus(token_scores(net, eps, drops_many, 0.1), 4)[0].tolist()).isdisjoint(first[0].tolist())


def test_other_models_and_guidance_are_refused(model):
    from samplegraph.nodes.models.mnist import ModelMnist
    with pytest.raises(NodeError, match="diffusion transformer"):
        ModelRAS().run(ModelMnist().run())
    with pytest.raises(NodeError, match="directly to 'sample'"):
        ModelRAS().run(model)(torch.zeros(1, 16, 16), torch.ones(1))


def test_ratio_one_on_the_shipped_dit_is_its_plain_model():
    from samplegraph.nodes.models.mnist_dit import ModelMnistDiT
    cond = ModelCondition(label=8).run(ModelMnistDiT().run())
    plain = sample(cond, n=3, steps=5, shape=(28, 28)).x
    assert torch.equal(sample(ModelRAS(ratio=1.0).run(cond), n=3, steps=5, shape=(28, 28)).x, plain)
    sparse = sample(ModelRAS(ratio=0.5, dense_calls=2).run(cond), n=3, steps=5, shape=(28, 28)).x
    assert not torch.equal(sparse, plain) and torch.isfinite(sparse).all()
