"""Discrete-diffusion samplers, one node per file (nodes/discrete/sampler.py is the contract)."""


def nodes() -> list[type]:
    from .ancestral import Ancestral
    from .coherent import Coherent
    from .confidence import Confidence
    from .first_hitting import FirstHitting
    from .remdm import ReMDM
    from .tau_leaping import TauLeaping
    from .uniform import Uniform

    return [
        Ancestral,
        FirstHitting,
        TauLeaping,
        Uniform,
        Confidence,
        ReMDM,
        Coherent,
    ]
