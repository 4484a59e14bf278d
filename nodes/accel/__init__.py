"""Training-free acceleration nodes: block step caching, DeepCache, T-Stitch, ParaDiGMS, and for the DiT
region-adaptive sampling (RAS) and bottleneck sampling."""


def nodes() -> list[type]:
    from .bottleneck import SampleBottleneck
    from .deep_cache import ModelDeepCache
    from .paradigms import SampleParadigms
    from .ras import ModelRAS
    from .step_cache import ModelStepCache
    from .stitch import ModelStitch

    return [ModelStepCache, ModelDeepCache, ModelStitch, SampleParadigms, ModelRAS, SampleBottleneck]
