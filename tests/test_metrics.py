"""Sliced Wasserstein: exact 1-D values, analytic shifts between Gaussians, invariances, the node."""
import math

import pytest
import torch

from samplegraph import Node, NodeRunError, Registry, Runtime, node
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import Distribution
from samplegraph.nodes.metrics.common import sliced_wasserstein
from samplegraph.nodes.metrics.sliced_wasserstein import SlicedWasserstein


class IsoGaussian(Distribution):
    """N(mean, std^2 I) with exact draws and log-density."""

    def __init__(self, mean: torch.Tensor, std: float = 1.0):
        self.mean, self.std = mean.to(torch.float64), std  # (D,)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.mean + self.std * torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        d = self.mean.numel()
        sq = ((x.reshape(x.shape[0], -1) - self.mean) ** 2).sum(dim=1)  # (B,)
        return -0.5 * sq / self.std**2 - d * math.log(self.std) - 0.5 * d * math.log(2 * math.pi)


@node("test.gaussian")
class GaussianSource(Node):
    """N(shift * 1, I) in `dim` dimensions; SW2 to N(0, I) tends to |mu| / sqrt(D) = shift."""

    dim: int = 2
    shift: float = 0.0

    def run(self) -> Distribution:
        return IsoGaussian(torch.full((self.dim,), self.shift))


@node("test.gaussian_samples")
class GaussianSamples(Node):
    """n float32 draws (n, *shape) of N(shift * 1, I), seeded by `seed`."""

    n: int = 1000
    shape: tuple[int, ...] = (2,)
    shift: float = 0.0
    seed: int = 0

    def run(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return self.shift + torch.randn(self.n, *self.shape, generator=g)  # (n, *shape)


def normal(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # (n, d)


def sw(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    return sliced_wasserstein(a, b, projections, torch.Generator().manual_seed(seed))


def test_one_dimension_with_unequal_counts_is_exact():
    # quantile functions of {0, 1} and {0, 1, 2} differ by 1 on (1/3, 1/2] and (2/3, 1]: W2^2 = 1/6 + 1/3
    a, b = torch.tensor([[1.0], [0.0]]), torch.tensor([[2.0], [0.0], [1.0]])
    assert sw(a, b, projections=7) == pytest.approx(math.sqrt(0.5), abs=1e-12)


def test_repeating_every_point_leaves_the_distance_unchanged():
    a, b = normal(50, 3, 1), normal(70, 3, 2)
    assert sw(torch.cat([a, a, a]), b) == pytest.approx(sw(a, b), abs=1e-12)


def test_same_distribution_tends_to_zero_as_n_grows():
    values = [sw(normal(n, 3, 1), normal(n, 3, 2)) for n in (100, 1_000, 10_000)]
    assert values[0] > values[1] > values[2]
    assert values[2] < 0.05


def test_pure_shift_gives_norm_over_sqrt_dim():
    # b = a + mu shifts every projection by theta.mu, so SW2^2 = E[(theta.mu)^2] = |mu|^2 / D exactly in the limit
    a, mu = normal(200, 4, 0), torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    assert sw(a, a + mu, projections=16_384) == pytest.approx(float(mu.norm()) / 2, rel=0.01)


def test_invariant_to_order_and_symmetric():
    a, b = normal(300, 5, 1), normal(200, 5, 2) + 0.5
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    assert sw(a[perm], b) == pytest.approx(sw(a, b), abs=1e-12)
    assert sw(b, a) == pytest.approx(sw(a, b), abs=1e-12)


def test_node_flattens_samples_and_records_the_value():
    ctx = NodeContext.detached()
    samples = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(5)) + 1.5  # (N, 1, 2, 2)
    value = SlicedWasserstein(reference_samples=3000).run(samples, IsoGaussian(torch.zeros(4)), ctx)
    assert value == pytest.approx(1.5, rel=0.05)
    assert ctx.metrics == {"sliced_wasserstein": value}
    flat = SlicedWasserstein(reference_samples=3000).run(samples.reshape(4000, 4), IsoGaussian(torch.zeros(4)), ctx)
    assert flat == value


def workflow(workflow_seed: int, **sw_params: object) -> dict:
    return {"seed": workflow_seed, "nodes": {
        "x": {"kind": "test.gaussian_samples", "params": {"n": 5000, "shift": 2.0}},
        "ref": {"kind": "test.gaussian"},
        "sw": {"kind": "metrics.sliced_wasserstein", "inputs": {"samples": "x", "reference": "ref"},
               "params": sw_params}},
        "outputs": ["sw"]}


def test_node_in_a_workflow_is_deterministic_and_ignores_the_workflow_seed():
    rt = Runtime(registry=Registry([GaussianSource, GaussianSamples, SlicedWasserstein]), cache=False)
    first = rt.run(workflow(0))
    assert first["sw"] == pytest.approx(2.0, rel=0.03)  # shift 2 in every coordinate: |mu| / sqrt(D) = 2
    assert rt.run(workflow(9))["sw"] == first["sw"]
    assert rt.run(workflow(0, seed=1))["sw"] != first["sw"]
    assert first.report.nodes[-1].metrics == {"sliced_wasserstein": first["sw"]}


def test_node_reports_mismatched_dimensions_and_non_finite_samples():
    rt = Runtime(registry=Registry([GaussianSource, GaussianSamples, SlicedWasserstein]), cache=False)
    wf = workflow(0)
    wf["nodes"]["x"]["params"]["shape"] = [3]
    with pytest.raises(NodeRunError, match=r"node 'sw'.*input 'reference'.*2 values.*3 per sample"):
        rt.run(wf)
    bad = torch.zeros(10, 2)
    bad[3, 1] = float("nan")
    with pytest.raises(NodeError, match=r"input 'samples' must be finite, but 1 of 10"):
        SlicedWasserstein().run(bad, IsoGaussian(torch.zeros(2)), NodeContext.detached())
