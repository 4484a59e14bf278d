"""Minority guidance (Um et al. 2024) on the shipped digits model: the minority levels that label the
classifier's training set are equal-count quantile bins ordered by the minority score, and
guidance.classifier towards the rarest level with model.digits_minority_classifier raises the
minority score of samples drawn from the same noise."""
import torch

from samplegraph.nodes.data.digits import digits_split
from samplegraph.nodes.guidance.classifier import ClassifierGuidance
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.digits_minority_classifier import ModelDigitsMinorityClassifier
from samplegraph.nodes.models.minority import LEVELS, level_edges, minority_levels, minority_score

from helpers_digits import sample


def test_training_levels_are_balanced_and_ordered_by_score():
    model = ModelDigits().run()
    scores = minority_score(model, digits_split("train")[0])  # (N,)
    levels = minority_levels(scores, level_edges(scores))  # (N,)
    counts = torch.bincount(levels, minlength=LEVELS)
    assert counts.sum() == scores.shape[0] and (counts - scores.shape[0] / LEVELS).abs().max() <= 1
    means = torch.stack([scores[levels == k].mean() for k in range(LEVELS)])  # (L,)
    assert (means.diff() > 0).all()  # 0 the most common (best reconstructed) .. L-1 the rarest
    head = digits_split("train")[0][:8]
    assert minority_score(model, head).equal(minority_score(model, head))  # fixed noise: deterministic
    # a sub-batch scores the same up to BLAS blocking (which depends on the CPU and the batch size)
    torch.testing.assert_close(minority_score(model, head), scores[:8], rtol=1e-5, atol=1e-5)


def test_minority_guidance_raises_the_minority_score():
    model = ModelDigits().run()  # unbound: the unconditional model
    classifier = ModelDigitsMinorityClassifier().run()
    guided = ClassifierGuidance(label=LEVELS - 1, scale=3.0).run(model, classifier)
    plain, rare = (minority_score(model, sample(d, n=128, steps=20, seed=3)) for d in (model, guided))  # (128,)
    assert rare.mean() > 1.2 * plain.mean()
    common = ClassifierGuidance(label=0, scale=3.0).run(model, classifier)
    assert minority_score(model, sample(common, n=128, steps=20, seed=3)).mean() < plain.mean()
