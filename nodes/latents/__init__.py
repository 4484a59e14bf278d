"""Latent nodes: initial noise."""


def nodes() -> list[type]:
    from .noise import LatentNoise

    return [LatentNoise]
