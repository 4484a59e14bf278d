"""Posterior sampling and search over discrete-diffusion particles (infill, constraints, rewards)."""


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
