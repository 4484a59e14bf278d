"""Model nodes: networks and analytic models seen as Denoisers."""


def nodes() -> list[type]:
    from .condition import ModelCondition
    from .diffusers_model import ModelDiffusers
    from .digits import ModelDigits
    from .digits_classifier import ModelDigitsClassifier
    from .digits_minority_classifier import ModelDigitsMinorityClassifier
    from .digits_noisy_classifier import ModelDigitsNoisyClassifier
    from .gmm import ModelGMM
    from .gmm_classifier import ModelGMMClassifier
    from .gmm_condition import ModelGMMCondition
    from .mnist import ModelMnist
    from .mnist_classifier import ModelMnistClassifier
    from .mnist_dit import ModelMnistDiT
    from .safetensors_model import ModelSafetensors
    from .skip_blocks import ModelSkipBlocks

    return [ModelGMM, ModelCondition, ModelGMMCondition, ModelGMMClassifier, ModelSafetensors, ModelDigits,
            ModelDiffusers, ModelDigitsClassifier, ModelDigitsNoisyClassifier, ModelSkipBlocks, ModelMnist,
            ModelDigitsMinorityClassifier, ModelMnistDiT, ModelMnistClassifier]
