"""Feature-space metrics against closed forms: Frechet distance of Gaussians (non-commuting
covariances, exact-moment samples, invariances), improved precision/recall on hand-built point sets
and a brute-force definition, diversity on exact cases, and classifier accuracy/confidence under an
analytic stand-in classifier (two unit Gaussian classes: p(1 | x) = sigmoid(4 x_0))."""
import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

import samplegraph.nodes.metrics.common as common
from samplegraph import NodeRunError, Registry, Runtime, node
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.api import Node
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.metrics.classifier_accuracy import ClassifierAccuracy
from samplegraph.nodes.metrics.common import (frechet_distance, frechet_gaussians, knn_radii,
                                              mean_pairwise_distance, precision_recall)
from samplegraph.nodes.metrics.diversity import Diversity
from samplegraph.nodes.metrics.frechet_distance import FrechetDistance
from samplegraph.nodes.metrics.precision_recall import MetricPrecisionRecall
from samplegraph.nodes.models.classifier import Classifier

F64 = torch.float64


class GaussianClasses(Classifier):
    """Equal-weight classes N(m_c, I): exact log p(c | x) = log_softmax_c(-|x - m_c|^2 / 2); features are
    the flattened input times `gain` (gain 1: the identity)."""

    def __init__(self, means: list[list[float]], gain: float = 1.0):
        self.means, self.gain = torch.tensor(means, dtype=F64), gain  # (C, D)
        self.classes = len(means)
        self.calls: list[int] = []  # batch size of every call, log-probs or features

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        self.calls.append(x0.shape[0])
        sq = ((x0.reshape(x0.shape[0], 1, -1).to(F64) - self.means) ** 2).sum(-1)  # (B, C)
        return torch.log_softmax(-0.5 * sq, dim=1)

    def features(self, x0: torch.Tensor) -> torch.Tensor:
        self.calls.append(x0.shape[0])
        return self.gain * x0.reshape(x0.shape[0], -1)  # (B, D)


TWO = GaussianClasses([[-2.0, 0.0], [2.0, 0.0]])  # log p(1|x) - log p(0|x) = 4 x_0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_moments(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n points (n, D) whose sample mean and unbiased covariance are exactly `mean` and `cov`."""
    z = torch.randn(n, mean.numel(), generator=gen(seed), dtype=F64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / (n - 1))).T  # whitened: covariance I
    return mean + z @ torch.linalg.cholesky(cov).T


def spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen(seed), dtype=F64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=F64)


S1 = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=F64)
S2 = torch.tensor([[1.0, -0.4], [-0.4, 0.5]], dtype=F64)  # S1 S2 != S2 S1
MU1, MU2 = torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([1.5, -0.5], dtype=F64)


def closed_form_2d(mu1, s1, mu2, s2) -> float:
    # for 2x2 M with real non-negative eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))
    tr_root = math.sqrt(float((s1 @ s2).trace()) + 2 * math.sqrt(float(torch.det(s1) * torch.det(s2))))
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace()) - 2 * tr_root


def test_frechet_of_gaussians_matches_the_closed_form_for_non_commuting_covariances():
    assert not torch.allclose(S1 @ S2, S2 @ S1)
    assert frechet_gaussians(MU1, S1, MU2, S2) == pytest.approx(closed_form_2d(MU1, S1, MU2, S2), abs=1e-12)
    d1, d2 = torch.tensor([4.0, 1.0, 0.25], dtype=F64), torch.tensor([1.0, 9.0, 0.25], dtype=F64)
    # commuting (diagonal) covariances: sum (sqrt a_i - sqrt b_i)^2 = 1 + 4 + 0
    assert frechet_gaussians(torch.zeros(3), torch.diag(d1), torch.zeros(3), torch.diag(d2)) == pytest.approx(5.0)


def test_frechet_agrees_with_scipy_sqrtm_in_higher_dimension():
    for d, seed in [(5, 0), (16, 1)]:
        s1, s2 = spd(d, seed), spd(d, seed + 10)
        mu1, mu2 = torch.randn(d, generator=gen(seed), dtype=F64), torch.zeros(d, dtype=F64)
        root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
        ref = float((mu1 - mu2).square().sum() + s1.trace() + s2.trace()) - 2 * np.trace(root)
        assert frechet_gaussians(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9, abs=1e-9)


def test_frechet_of_samples_with_exact_moments_is_the_closed_form():
    a, b = exact_moments(300, MU1, S1, 0), exact_moments(500, MU2, S2, 1)
    assert frechet_distance(a, b) == pytest.approx(closed_form_2d(MU1, S1, MU2, S2), abs=1e-10)


def test_frechet_is_zero_on_itself_symmetric_and_invariant_to_rigid_motions():
    a = torch.randn(200, 6, generator=gen(2), dtype=F64) @ spd(6, 3)
    b = torch.randn(150, 6, generator=gen(4), dtype=F64) + 0.7
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen(5), dtype=F64))  # orthogonal
    t = torch.randn(6, generator=gen(6), dtype=F64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-10)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-10)
    assert frechet_distance(a @ q + t, b @ q + t) == pytest.approx(frechet_distance(a, b), rel=1e-9)
    assert frechet_distance(a, b) > 1.0


def test_frechet_with_singular_covariances_stays_exact():
    # 3 points in 5-D (rank-2 covariance): a shifted copy is |shift|^2 away
    a = torch.randn(3, 5, generator=gen(7), dtype=F64)
    shift = torch.tensor([1.0, 0.0, -2.0, 0.0, 0.5], dtype=F64)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), abs=1e-9)


def brute_precision_recall(a: torch.Tensor, b: torch.Tensor, k: int) -> tuple[float, float]:
    """The definition, pair by pair: x is covered by set S if |x - s| <= (k-th NN distance of s in S)."""
    def radius(s, i):
        return sorted(float((s[i] - s[j]).norm()) for j in range(len(s)) if j != i)[k - 1]

    def covered(x, s):
        return any(float((x - s[j]).norm()) <= radius(s, j) for j in range(len(s)))

    return (sum(covered(x, b) for x in a) / len(a), sum(covered(y, a) for y in b) / len(b))


def column(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)[:, None]  # (N, 1)


def test_precision_recall_on_hand_built_sets():
    ref, samples = column([0, 1, 2, 3]), column([0.5, 0.75, 10])
    # k=1: reference balls radius 1 cover 0.5 and 0.75, not 10; sample radii 0.25, 0.25, 9.25 cover 1, 2, 3
    assert precision_recall(samples, ref, 1) == pytest.approx((2 / 3, 3 / 4))
    # k=2: reference radii 2, 1, 1, 2 still miss 10; sample radii 9.5, 9.25, 9.5 cover all of 0..3
    assert precision_recall(samples, ref, 2) == pytest.approx((2 / 3, 1.0))
    # closed balls: a sample exactly on the boundary (4 = 3 + radius 1) is inside
    assert precision_recall(column([4.0, 4.0]), ref, 1)[0] == 1.0
    assert precision_recall(column([4.0 + 1e-9, 4.0]), ref, 1)[0] == 0.5


def test_precision_recall_identical_and_far_sets():
    a = torch.randn(40, 3, generator=gen(8), dtype=F64)
    assert precision_recall(a, a.clone(), 3) == (1.0, 1.0)
    assert precision_recall(a, a + 100.0, 3) == (0.0, 0.0)


def test_precision_recall_match_the_definition_and_do_not_depend_on_blocking(monkeypatch):
    a = torch.randn(25, 2, generator=gen(9), dtype=F64)
    b = torch.randn(30, 2, generator=gen(10), dtype=F64) * 0.5 + 1.0  # measured (P, R): k=1 .44 .43, k=5 .64 .90
    for k in (1, 3, 5):
        expect = brute_precision_recall(a, b, k)
        assert precision_recall(a, b, k) == pytest.approx(expect, abs=1e-12)
        assert 0 < expect[0] < 1 and 0 < expect[1] < 1
    whole = (knn_radii(b, 3), precision_recall(a, b, 3), mean_pairwise_distance(a))
    monkeypatch.setattr(common, "CHUNK_ELEMENTS", 70)  # blocks of 2-3 rows, with the diagonal off the block's start
    assert torch.equal(knn_radii(b, 3), whole[0])
    assert precision_recall(a, b, 3) == whole[1]
    assert mean_pairwise_distance(a) == pytest.approx(whole[2], rel=1e-14)


def test_diversity_exact_cases():
    triangle = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], dtype=F64)  # sides 3, 4, 5
    assert mean_pairwise_distance(triangle) == pytest.approx(4.0, abs=1e-15)
    assert mean_pairwise_distance(torch.ones(5, 3, dtype=F64)) == 0.0
    a = torch.randn(20, 4, generator=gen(11), dtype=F64)
    brute = sum(float((a[i] - a[j]).norm()) for i, j in itertools.permutations(range(20), 2)) / (20 * 19)
    assert mean_pairwise_distance(a) == pytest.approx(brute, rel=1e-12)
    assert mean_pairwise_distance(2.5 * a) == pytest.approx(2.5 * brute, rel=1e-12)


def test_feature_nodes_use_the_classifier_features_or_raw_values():
    ctx = NodeContext.detached()
    x = torch.randn(64, 2, 2, generator=gen(12), dtype=F64)  # (N, 2, 2) images, 4 values each
    ref = torch.randn(80, 2, 2, generator=gen(13), dtype=F64) + 0.5
    clf = GaussianClasses([[0.0] * 4, [1.0] * 4], gain=3.0)  # features = 3 x: FD scales by 9, distances by 3
    flat_x, flat_r = x.reshape(64, 4), ref.reshape(80, 4)
    fd = FrechetDistance(batch=10).run(x, ref, ctx, clf)
    assert fd == pytest.approx(9 * frechet_distance(flat_x, flat_r), rel=1e-9)
    assert clf.calls == [10] * 6 + [4] + [10] * 8  # 'batch' rows per call: 64 samples, then 80 reference
    assert FrechetDistance().run(x, ref, ctx) == pytest.approx(fd / 9, rel=1e-9)
    assert MetricPrecisionRecall(k=2).run(x, ref, ctx, clf) == precision_recall(flat_x, flat_r, 2)
    assert Diversity().run(x, ctx, clf) == pytest.approx(3 * mean_pairwise_distance(flat_x), rel=1e-12)
    assert ctx.metrics == {"frechet_distance": pytest.approx(fd / 9), "precision": ctx.metrics["precision"],
                           "recall": ctx.metrics["recall"], "diversity": ctx.metrics["diversity"]}


def test_feature_nodes_report_bad_inputs():
    ctx, x = NodeContext.detached(), torch.randn(10, 2, generator=gen(14))
    with pytest.raises(NodeError, match=r"'samples' \(shape \(10, 2\)\) and 'reference' \(shape \(10, 3\)\).*2 and 3"):
        FrechetDistance().run(x, torch.randn(10, 3), ctx)
    with pytest.raises(NodeError, match=r"input 'reference' holds 1 points.*at least 2"):
        FrechetDistance().run(x, x[:1], ctx)
    with pytest.raises(NodeError, match=r"parameter 'k' \(4\).*samples 10, reference 4"):
        MetricPrecisionRecall(k=4).run(x, x[:4], ctx)
    bad = x.clone()
    bad[2, 0] = float("inf")
    with pytest.raises(NodeError, match=r"input 'samples' must be finite, but 1 of 10"):
        Diversity().run(bad, ctx)


SIGMOID_CONF = [1 / (1 + math.exp(-v)) for v in (4.0, 1.0, -2.0, 8.0)]  # p(1 | x) at x_0 = 1, 0.25, -0.5, 2


def test_accuracy_and_confidence_are_exact_under_the_analytic_classifier():
    ctx = NodeContext.detached()
    x = torch.tensor([[1.0, 0.3], [0.25, -1.0], [-0.5, 2.0], [2.0, 0.0]])
    result = ClassifierAccuracy(target=1, batch=3).run(x, TWO, ctx)
    assert result.accuracy == 0.75  # argmax is class 1 where x_0 > 0
    assert result.confidence == pytest.approx(sum(SIGMOID_CONF) / 4, abs=1e-12)
    assert ctx.metrics == {"accuracy": 0.75, "confidence": result.confidence}
    flipped = ClassifierAccuracy(target=0).run(x, TWO, NodeContext.detached())
    assert flipped.accuracy == 0.25 and flipped.confidence == pytest.approx(1 - result.confidence, abs=1e-12)


def test_per_sample_labels_give_a_per_class_breakdown():
    ctx = NodeContext.detached()
    x = torch.tensor([[1.0, 0.3], [0.25, -1.0], [-0.5, 2.0], [2.0, 0.0]])
    result = ClassifierAccuracy().run(x, TWO, ctx, labels=torch.tensor([1, 0, 0, 1]))
    c = SIGMOID_CONF
    assert result.accuracy == 0.75
    assert result.confidence == pytest.approx((c[0] + 1 - c[1] + 1 - c[2] + c[3]) / 4, abs=1e-12)
    table = ctx.metrics["per_class"]
    assert table["0"] == {"count": 2, "accuracy": 0.5, "confidence": pytest.approx((2 - c[1] - c[2]) / 2)}
    assert table["1"] == {"count": 2, "accuracy": 1.0, "confidence": pytest.approx((c[0] + c[3]) / 2)}


@pytest.mark.parametrize("params, labels, match", [
    ({}, None, r"no target class: set parameter 'target' or connect input 'labels'"),
    ({"target": 1}, torch.tensor([0, 1]), r"parameter 'target' and input 'labels' both"),
    ({"target": 2}, None, r"parameter 'target' \(2\) is not a class.*0\.\.1"),
    ({}, torch.tensor([0, 5]), r"input 'labels' \(5\) is not a class"),
    ({}, torch.tensor([0.0, 1.0]), r"input 'labels' must be integer class labels of shape \(2,\).*float32"),
    ({}, torch.tensor([0, 1, 1]), r"shape \(2,\).*shape \(3,\)"),
])
def test_accuracy_reports_bad_targets(params, labels, match):
    with pytest.raises(NodeError, match=match):
        ClassifierAccuracy(**params).run(torch.zeros(2, 2), TWO, NodeContext.detached(), labels=labels)


@node("test.two_classes")
class TwoClasses(Node):
    """The analytic two-class stand-in classifier."""

    def run(self) -> Classifier:
        return TWO


@node("test.points")
class Points(Node):
    """n seeded points (n, 2) around (shift, 0)."""

    n: int = 200
    shift: float = 0.0
    seed: int = 0

    def run(self) -> torch.Tensor:
        return torch.randn(self.n, 2, generator=gen(self.seed)) + torch.tensor([self.shift, 0.0])


def test_metric_nodes_in_a_workflow_record_their_values_in_the_report():
    rt = Runtime(registry=Registry([TwoClasses, Points, ClassifierAccuracy, FrechetDistance,
                                    MetricPrecisionRecall, Diversity]), cache=False)
    wf = {"nodes": {
        "clf": {"kind": "test.two_classes"},
        "x": {"kind": "test.points", "params": {"shift": 2.0}},
        "real": {"kind": "test.points", "params": {"shift": 2.0, "seed": 1, "n": 300}},
        "acc": {"kind": "metrics.classifier_accuracy", "params": {"target": 1},
                "inputs": {"samples": "x", "classifier": "clf"}},
        "fd": {"kind": "metrics.frechet_distance", "inputs": {"samples": "x", "reference": "real",
                                                              "classifier": "clf"}},
        "pr": {"kind": "metrics.precision_recall", "inputs": {"samples": "x", "reference": "real"}},
        "div": {"kind": "metrics.diversity", "inputs": {"samples": "x"}}},
        "outputs": ["acc.accuracy", "fd", "pr.precision", "pr.recall", "div"]}
    out = rt.run(wf)
    metrics = {n.node: n.metrics for n in out.report.nodes}
    assert out["acc.accuracy"] == metrics["acc"]["accuracy"] > 0.97  # P(N(2, 1) > 0) = 0.977
    assert out["fd"] == metrics["fd"]["frechet_distance"] < 0.1
    assert out["pr.precision"] == metrics["pr"]["precision"] > 0.8 and metrics["pr"]["recall"] > 0.8
    assert out["div"] == metrics["div"]["diversity"] == pytest.approx(math.sqrt(math.pi), rel=0.1)  # E|z-z'| in 2-D
    wf["nodes"]["acc"]["params"]["target"] = 7
    with pytest.raises(NodeRunError, match=r"node 'acc'.*parameter 'target' \(7\)"):
        rt.run(wf)
