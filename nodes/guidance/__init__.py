"""Guidance nodes: each maps Denoiser(s) to a Denoiser (docs/ARCHITECTURE.md); samplers never know guidance exists."""


def nodes() -> list[type]:
    from .apg import APG
    from .autoguidance import Autoguidance
    from .cads import CADS
    from .cfg import CFG
    from .cfg_pp import CFGPP
    from .cfg_rescale import CFGRescale
    from .cfg_zero_star import CFGZeroStar
    from .classifier import ClassifierGuidance
    from .epsilon_scaling import EpsilonScaling
    from .coarse import CoarseGuidance
    from .gfcg import GFCG
    from .reward_gradient import RewardGradient
    from .skip_layer import SkipLayerGuidance

    return [CFG, CFGRescale, APG, CFGZeroStar, Autoguidance, ClassifierGuidance, CFGPP, GFCG, RewardGradient,
            CoarseGuidance, SkipLayerGuidance, CADS, EpsilonScaling]
