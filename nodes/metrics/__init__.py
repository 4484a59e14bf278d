"""Metric nodes: sample quality against exact references and in a classifier's feature space."""


def nodes() -> list[type]:
    from .classifier_accuracy import ClassifierAccuracy
    from .discrete_exact import MetricDiscreteExact
    from .diversity import Diversity
    from .frechet_distance import FrechetDistance
    from .gmm_log_likelihood import GMMLogLikelihood
    from .mode_weights import MetricModeWeights
    from .precision_recall import MetricPrecisionRecall
    from .sliced_wasserstein import SlicedWasserstein
    from .text_quality import MetricTextQuality

    return [SlicedWasserstein, ClassifierAccuracy, FrechetDistance, MetricPrecisionRecall, Diversity,
            GMMLogLikelihood, MetricModeWeights,
            MetricDiscreteExact, MetricTextQuality]
