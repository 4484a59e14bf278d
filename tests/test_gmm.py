"""GaussianMixture and model.gmm: the exact denoiser, score, density and sampler, and presets."""
import math

import pytest
import torch
from pydantic import ValidationError
from scipy import stats

from samplegraph import Registry, Runtime, Workflow, WorkflowError
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.runtime import values

F64 = torch.float64


def mixture_1d() -> GaussianMixture:
    return ModelGMM(preset="custom", means=[[-2.0], [1.0], [3.0]], stds=[0.3, 0.7, 0.5],
                    weights=[0.2, 0.5, 0.3]).run()


def mixture_2d() -> GaussianMixture:
    return ModelGMM(preset="custom", means=[[-3.0, 0.0], [2.0, 2.0], [1.0, -3.0]],
                    stds=[[0.5, 1.0], 0.4, [1.2, 0.3]], weights=[3, 2, 5]).run()


def queries(n=64, d=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 4 * torch.randn(n, d, generator=gen, dtype=F64)  # (n, d)
    sigma = torch.exp(torch.empty(n, dtype=F64).uniform_(math.log(0.02), math.log(30.0), generator=gen))  # (n,)
    return x, sigma


@pytest.mark.parametrize("model", [ModelGMM().run(), mixture_2d()], ids=["ring", "custom"])
def test_denoiser_is_tweedie_of_autograd_score(model):
    x, sigma = queries()
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(model.log_marginal(x, sigma).sum(), x)  # (n, 2)
    x = x.detach()
    torch.testing.assert_close(model.score(x, sigma), grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model(x, sigma), x + sigma[:, None] ** 2 * grad, rtol=1e-10, atol=1e-10)


def test_denoiser_matches_quadrature_in_1d():
    model = mixture_1d()
    grid = torch.linspace(-12, 12, 200_001, dtype=F64)  # x0 values
    prior = model.log_prob(grid[:, None]).exp()  # (G,)
    for x, sigma in [(-1.0, 0.1), (0.5, 1.0), (2.2, 0.6), (4.0, 5.0)]:
        like = torch.exp(-0.5 * ((x - grid) / sigma) ** 2) * prior  # (G,) unnormalised posterior
        exact = torch.trapezoid(grid * like, grid) / torch.trapezoid(like, grid)
        got = model(torch.tensor([[x]], dtype=F64), torch.tensor([sigma], dtype=F64))
        assert abs(float(got) - float(exact)) < 1e-9


def test_denoiser_matches_monte_carlo_in_2d():
    model = mixture_2d()
    x0 = model.sample(400_000, torch.Generator().manual_seed(1))  # (N, 2)
    sigma = 1.0
    for x in ([0.0, 0.0], [-2.5, 1.0], [1.5, -1.0]):
        x = torch.tensor(x, dtype=F64)
        w = torch.softmax(-0.5 * ((x - x0) ** 2).sum(-1) / sigma ** 2, dim=0)  # (N,) posterior weights
        mc = w @ x0  # (2,)
        se = torch.sqrt(w ** 2 @ (x0 - mc) ** 2)  # (2,) standard error of the weighted mean
        exact = model(x[None], torch.tensor([sigma], dtype=F64))[0]
        assert ((exact - mc).abs() < 5 * se + 1e-6).all(), (exact, mc, se)


def test_log_prob_normalises_and_matches_direct_formula():
    grid = torch.linspace(-12, 12, 100_001, dtype=F64)
    assert abs(float(torch.trapezoid(mixture_1d().log_prob(grid[:, None]).exp(), grid)) - 1) < 1e-9
    model = mixture_2d()
    x, _ = queries(32)
    direct = sum(float(w) * stats.multivariate_normal(m.numpy(), torch.diag(s ** 2).numpy()).pdf(x.numpy())
                 for w, m, s in zip(model.weights, model.means, model.stds))
    torch.testing.assert_close(model.log_prob(x), torch.as_tensor(direct).log(), rtol=1e-10, atol=1e-10)


def test_sampler_matches_weights_means_and_covariance():
    model = mixture_2d()
    n = 200_000
    x = model.sample(n, torch.Generator().manual_seed(2))  # (n, 2)
    w, mu, var = model.weights, model.means, model.stds ** 2
    assert x.dtype == F64 and x.shape == (n, 2)
    assert ((model.mode_weights_of(x) - w).abs() < 5 * torch.sqrt(w * (1 - w) / n) + 2e-3).all()
    mean = w @ mu  # (2,)
    cov = torch.einsum("k,ki,kj->ij", w, mu, mu) + torch.diag(w @ var) - torch.outer(mean, mean)  # (2, 2)
    torch.testing.assert_close(x.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.05, rtol=0.01)


def test_dtypes_sigma_zero_and_extremes():
    model = ModelGMM().run()
    x, sigma = queries(16)
    exact = model(x, sigma)
    got32 = model(x.float(), sigma.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32, exact.float(), rtol=1e-5, atol=1e-5)
    assert torch.equal(model(x, torch.zeros(16, dtype=F64)), x)
    far = torch.full((2, 2), 1e4, dtype=F64)
    assert torch.isfinite(model(far, torch.tensor([0.01, 1e5], dtype=F64))).all()
    assert torch.isfinite(model.log_prob(far)).all()
    huge = model(x, torch.full((16,), 1e6, dtype=F64))  # barely informative: the data mean
    torch.testing.assert_close(huge, model.weights @ model.means.expand(16, -1, -1), atol=1e-3, rtol=0)


def test_bad_shapes_are_node_errors():
    model = ModelGMM().run()
    with pytest.raises(NodeError, match=r"shape \(B, 2\)"):
        model(torch.zeros(4, 3), torch.ones(4))
    with pytest.raises(NodeError, match="sigma of shape"):
        model(torch.zeros(4, 2), torch.ones(3))


def test_cache_roundtrip_device_and_size():
    model = mixture_2d()
    tensors, meta = values.encode(model, GaussianMixture)
    back = values.decode(GaussianMixture, tensors, meta, torch.device("cpu"))
    for name, tensor in model.cache_encode()[0].items():
        assert torch.equal(back.cache_encode()[0][name], tensor)
    assert model.to("cpu") is model and model.device == torch.device("cpu")
    assert model.shape == (2,) and model.nbytes == (6 + 6 + 3) * 8 and values.nbytes(model) == model.nbytes


def test_presets():
    ring = ModelGMM(modes=6, scale=3.0).run()
    torch.testing.assert_close(ring.means.norm(dim=1), torch.full((6,), 3.0, dtype=F64))
    grid = ModelGMM(preset="grid", scale=2.0).run()
    assert grid.means.shape == (9, 2) and sorted(set(grid.means[:, 0].tolist())) == [-2.0, 0.0, 2.0]
    rand = ModelGMM(preset="random", modes=5, dim=7, preset_seed=3).run()
    assert rand.means.shape == (5, 7)
    assert torch.equal(rand.means, ModelGMM(preset="random", modes=5, dim=7, preset_seed=3).run().means)
    assert not torch.equal(rand.means, ModelGMM(preset="random", modes=5, dim=7, preset_seed=4).run().means)
    custom = mixture_2d()
    torch.testing.assert_close(custom.weights, torch.tensor([0.3, 0.2, 0.5], dtype=F64))
    assert custom.stds.tolist() == [[0.5, 1.0], [0.4, 0.4], [1.2, 0.3]]


@pytest.mark.parametrize("params, field", [
    ({"preset": "grid", "modes": 8}, "modes"),
    ({"preset": "ring", "dim": 3}, "dim"),
    ({"preset": "custom"}, "means"),
    ({"preset": "custom", "means": [[0, 0], [1]]}, "means"),
    ({"preset": "custom", "means": [[0, 0], [1, 1]], "stds": [1.0]}, "stds"),
    ({"preset": "custom", "means": [[0.0], [1.0]], "stds": [1.0, -1.0]}, "stds"),
    ({"modes": 4, "weights": [1, 1, 1]}, "weights"),
    ({"weights": [-1, 1, 1, 1, 1, 1, 1, 1]}, "weights"),
    ({"std": 0}, "std"),
])
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ValidationError) as info:
        ModelGMM(**params)
    assert [e["loc"][0] for e in info.value.errors()] == [field]


def test_workflow_validation_reports_every_bad_model_param():
    wf = Workflow.from_dict({"nodes": {
        "model": {"kind": "model.gmm", "params": {"preset": "grid", "modes": 5, "scale": -1, "weights": [1, 2]}},
        "other": {"kind": "model.gmm", "params": {"preset": "custom", "means": [[0, 0]], "preset_seed": 1}},
    }, "outputs": ["model", "other"]})
    with pytest.raises(WorkflowError) as info:
        Runtime(registry=Registry([ModelGMM])).validate(wf)
    text = str(info.value)
    assert len(info.value.problems) == 3
    assert "node 'model', param 'modes'" in text and "square number" in text
    assert "node 'model', param 'scale'" in text
    assert "node 'model', param 'weights'" not in text  # unknown K once 'modes' failed: no second guess
    assert "node 'other', param 'preset_seed'" in text and "only by 'random'" in text
