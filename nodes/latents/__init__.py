"""Latent nodes: initial noise."""


def nodes() -> list[type]:
    from .noise import LatentNoise
    from .empty import LatentEmpty

    return [LatentNoise, LatentEmpty]
