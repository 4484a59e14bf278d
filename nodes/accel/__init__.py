"""Training-free acceleration nodes: region-adaptive sampling (RAS) and bottleneck sampling for the DiT."""


def nodes() -> list[type]:
    from .bottleneck import SampleBottleneck
    from .ras import ModelRAS

    return [ModelRAS, SampleBottleneck]
