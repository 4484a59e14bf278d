"""Guidance nodes: each maps Denoiser(s) to a Denoiser (DESIGN.md); samplers never know guidance exists."""


def nodes() -> list[type]:
    from .apg import APG
    from .autoguidance import Autoguidance
    from .cfg import CFG
    from .cfg_rescale import CFGRescale
    from .cfg_zero_star import CFGZeroStar
    from .classifier import ClassifierGuidance

    return [CFG, CFGRescale, APG, CFGZeroStar, Autoguidance, ClassifierGuidance]
