"""Posterior sampling and search over discrete-diffusion particles (infill, constraints, rewards).

discrete.anchoring ("Test-Time Anchoring for Discrete Diffusion Posterior Sampling", Rout et al. 2025,
arXiv 2510.02291) is not here: only its abstract could be read (quantized expectation for gradient-like
guidance in embedding space, anchored remasking), not its algorithm, so no method carries its name.
Plain infill with observed positions as fixed anchors is discrete.infill + any sampler."""


def nodes() -> list[type]:
    from .best_of_n import DiscreteBestOfN
    from .reward import TextPotential
    from .reward import TokenCount
    from .smc import DiscreteSmc
    from .split_gibbs import SplitGibbs
    from .svdd import DiscreteSvdd

    return [
        TokenCount,
        TextPotential,
        DiscreteSmc,
        DiscreteSvdd,
        DiscreteBestOfN,
        SplitGibbs,
    ]
