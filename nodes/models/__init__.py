"""Model nodes: networks and analytic models seen as Denoisers."""


def nodes() -> list[type]:
    from .condition import ModelCondition
    from .digits import ModelDigits
    from .gmm import ModelGMM
    from .gmm_classifier import ModelGMMClassifier
    from .gmm_condition import ModelGMMCondition
    from .safetensors_model import ModelSafetensors

    return [ModelGMM, ModelCondition, ModelGMMCondition, ModelGMMClassifier, ModelSafetensors, ModelDigits]
