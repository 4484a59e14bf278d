"""Training-free acceleration nodes: block step caching, DeepCache, T-Stitch, ParaDiGMS."""


def nodes() -> list[type]:
    from .deep_cache import ModelDeepCache
    from .paradigms import SampleParadigms
    from .step_cache import ModelStepCache
    from .stitch import ModelStitch

    return [ModelStepCache, ModelDeepCache, ModelStitch, SampleParadigms]
