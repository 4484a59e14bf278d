"""GMM metrics: exact mean log-likelihood (closed-form Gaussian values and expectations), per-mode and
per-class weight errors on hand-placed samples and exact draws, and workflows/metrics_gmm.json."""
import json
import math
from pathlib import Path

import pytest
import torch

from samplegraph import Runtime
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.metrics.common import frequencies, weight_errors
from samplegraph.nodes.metrics.gmm_log_likelihood import GMMLogLikelihood
from samplegraph.nodes.metrics.mode_weights import MetricModeWeights
from samplegraph.nodes.models.gaussian_mixture import GaussianMixture

F64 = torch.float64
LOG_2PI = math.log(2 * math.pi)
ROOT = Path(__file__).resolve().parents[1]


def gaussian(d: int, std: float) -> GaussianMixture:
    return GaussianMixture(torch.zeros(1, d), torch.full((1, d), std), torch.ones(1))


def test_log_likelihood_matches_closed_form_values_and_expectations():
    g, d, s = gaussian(3, 0.5), 3, 0.5
    x = torch.tensor([[0.0, 0.0, 0.0], [0.5, -1.0, 0.0]])  # float32 samples are read in float64
    exact = [-d / 2 * LOG_2PI - d * math.log(s) - 0.5 * float((r.double() ** 2).sum()) / s**2 for r in x]
    ctx = NodeContext.detached()
    assert GMMLogLikelihood().run(x, g, ctx) == pytest.approx(sum(exact) / 2, abs=1e-12)
    assert ctx.metrics == {"log_likelihood": pytest.approx(sum(exact) / 2, abs=1e-12)}
    # samples of std c*s have E log p = -D/2 log(2 pi s^2) - D c^2 / 2: c = 1 is the -entropy, the maximum
    n = 200_000
    for c in (1.0, 1.5, 0.5):
        z = c * s * torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=F64)
        expect = -d / 2 * (LOG_2PI + 2 * math.log(s)) - d * c**2 / 2
        assert GMMLogLikelihood().run(z, g, ctx) == pytest.approx(expect, abs=5 * d * c**2 / math.sqrt(2 * n))


def test_reference_draws_estimate_minus_the_entropy_of_well_separated_modes():
    ring = GaussianMixture(torch.tensor([[-8.0, 0.0], [8.0, 0.0], [0.0, 8.0]]), torch.full((3, 2), 0.4),
                           torch.tensor([0.5, 0.25, 0.25]))
    ctx = NodeContext.detached()
    GMMLogLikelihood(reference_samples=100_000, seed=3).run(torch.zeros(4, 2), ring, ctx)
    # modes 20 stds apart: H = H(weights) + H(N(0, 0.4^2 I)) up to exp(-200)
    entropy = -sum(w * math.log(w) for w in (0.5, 0.25, 0.25)) + (LOG_2PI + 1 + 2 * math.log(0.4))
    assert ctx.metrics["reference_log_likelihood"] == pytest.approx(-entropy, abs=0.01)  # MC se 0.004


def test_log_likelihood_reports_bad_inputs():
    with pytest.raises(NodeError, match=r"input 'samples' must be finite, but 1 of 2"):
        GMMLogLikelihood().run(torch.tensor([[0.0, 0.0], [math.nan, 1.0]]), gaussian(2, 1.0), NodeContext.detached())
    with pytest.raises(NodeError, match=r"expects x of shape \(B, 2\), got \(3, 3\)"):
        GMMLogLikelihood().run(torch.zeros(3, 3), gaussian(2, 1.0), NodeContext.detached())


TWO = GaussianMixture(torch.tensor([[-2.0], [2.0]]), torch.tensor([[0.5], [0.5]]), torch.tensor([0.25, 0.75]))
LABELLED = GaussianMixture(torch.tensor([[-6.0], [-2.0], [2.0], [6.0]]), torch.full((4, 1), 0.5),
                           torch.tensor([0.1, 0.2, 0.3, 0.4]), classes=torch.tensor([1, 0, 0, 1]))


def test_weight_errors_are_total_variation_and_max_error():
    assert weight_errors(torch.tensor([0.75, 0.25]), torch.tensor([0.25, 0.75])) == (0.5, 0.5)
    tv, worst = weight_errors(torch.tensor([0.5, 0.3, 0.2], dtype=F64), torch.tensor([0.2, 0.3, 0.5], dtype=F64))
    assert tv == pytest.approx(0.3) and worst == pytest.approx(0.3)
    assert torch.equal(frequencies(torch.tensor([2, 0, 2, 2]), 4), torch.tensor([0.25, 0.0, 0.75, 0.0], dtype=F64))


def test_mode_weights_of_hand_placed_samples():
    x = torch.tensor([[-2.1], [-1.0], [-0.1], [1.9]])  # three nearer -2, one nearer +2
    ctx = NodeContext.detached()
    out = MetricModeWeights().run(x, TWO, ctx)
    assert torch.equal(out.empirical, torch.tensor([0.75, 0.25], dtype=F64))
    assert (out.total_variation, out.max_error) == (0.5, 0.5)
    assert ctx.metrics == {"mode_weights_tv": 0.5, "mode_weights_max_error": 0.5, "mode_weights": [
        {"mode": 0, "target": 0.25, "empirical": 0.75}, {"mode": 1, "target": 0.75, "empirical": 0.25}]}
    assert torch.equal(out.empirical, TWO.mode_weights_of(x.double()))  # the mixture's own assignment


def test_class_weights_sum_components_of_each_label():
    # components at -6, -2, 2, 6 with classes 1, 0, 0, 1; x = 0 is equidistant from -2 and 2 and goes to
    # the heavier component (weight 0.3 > 0.2); targets: class 0 = 0.2 + 0.3, class 1 = 0.1 + 0.4
    x = torch.tensor([[-6.0], [-2.0], [2.5], [1.0], [6.0], [5.0], [0.0], [-1.5]])
    by_mode = MetricModeWeights().run(x, LABELLED, NodeContext.detached())
    assert torch.equal(by_mode.empirical, torch.tensor([1, 2, 3, 2], dtype=F64) / 8)
    by_class = MetricModeWeights(by="class").run(x, LABELLED, NodeContext.detached())
    assert torch.equal(by_class.empirical, torch.tensor([5, 3], dtype=F64) / 8)
    assert by_class.total_variation == pytest.approx(0.125) and by_class.max_error == pytest.approx(0.125)


def test_exact_draws_have_mode_weight_errors_within_sampling_error():
    model = GaussianMixture(4 * torch.tensor([[math.cos(a), math.sin(a)] for a in torch.arange(8) * math.pi / 4]),
                            torch.full((8, 2), 0.3), torch.tensor([4.0, 1, 1, 1, 2, 1, 1, 1]))
    tvs = []
    for n in (1_000, 100_000):
        out = MetricModeWeights().run(model.sample(n, torch.Generator().manual_seed(0)), model, NodeContext.detached())
        assert out.max_error < 4 * math.sqrt(0.25 / n)  # multinomial sd <= sqrt(w(1-w)/n); modes barely overlap
        tvs.append(out.total_variation)
    assert tvs[1] < tvs[0] / 3


def test_mode_weights_reports_bad_inputs():
    with pytest.raises(NodeError, match=r"'samples' has 2 values per sample.*over 1 dimensions"):
        MetricModeWeights().run(torch.zeros(3, 2), TWO, NodeContext.detached())
    with pytest.raises(NodeError, match=r"parameter 'by' is 'class', but the mixture has no class labels"):
        MetricModeWeights(by="class").run(torch.zeros(3, 1), TWO, NodeContext.detached())


def test_metrics_gmm_workflow_reports_values_close_to_exact(tmp_path):
    wf = json.loads((ROOT / "workflows/metrics_gmm.json").read_text())
    out = Runtime(device="cpu", cache=False).run(wf, out_dir=tmp_path)
    metrics = {n.node: n.metrics for n in out.report.nodes}
    ll = metrics["log_likelihood"]
    # measured: log-likelihood -3.014 vs exact-draw -2.931; TV 0.020 (mode), 0.016 (class); SW2 0.21
    assert ll["log_likelihood"] == out["log_likelihood"]
    assert abs(ll["log_likelihood"] - ll["reference_log_likelihood"]) < 0.2
    assert out["mode_weights.total_variation"] == metrics["mode_weights"]["mode_weights_tv"] < 0.05
    assert len(metrics["mode_weights"]["mode_weights"]) == 8 and len(metrics["class_weights"]["mode_weights"]) == 4
    assert out["class_weights.total_variation"] < 0.05 and out["sliced_w2"] < 0.3
    assert (tmp_path / "metrics_gmm.png").stat().st_size > 0
