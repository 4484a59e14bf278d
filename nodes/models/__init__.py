"""Model nodes: networks and analytic models seen as Denoisers."""


def nodes() -> list[type]:
    from .condition import ModelCondition
    from .gmm import ModelGMM
    from .gmm_classifier import ModelGMMClassifier

    return [ModelGMM, ModelCondition, ModelGMMClassifier]
