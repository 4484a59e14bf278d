"""Discrete diffusion as nodes (docs/ARCHITECTURE.md, "Tokens"): DiscreteDenoiser models, mask
schedules, templates, discrete samplers and the generic loop, posterior samplers and search over tokens."""


def nodes() -> list[type]:
    from .exact_model import ModelExactDiscrete
    from .mdm import ModelMDM
    from .posterior import nodes as posterior_nodes
    from .sample import DiscreteSample
    from .samplers import nodes as sampler_nodes
    from .schedules import nodes as schedule_nodes
    from .template import DiscreteInfill, DiscreteTemplate

    return [
        ModelExactDiscrete,
        ModelMDM,
        DiscreteTemplate,
        DiscreteInfill,
        DiscreteSample,
        *schedule_nodes(),
        *sampler_nodes(),
        *posterior_nodes(),
    ]
