"""Latent nodes: initial noise (of a given shape, of a VAE's latent shape, or added to a clean latent)."""


def nodes() -> list[type]:
    from .noise import LatentNoise
    from .empty import LatentEmpty
    from .add_noise import LatentAddNoise
    from .mask import LatentMask
    from .preview import LatentPreview

    return [LatentNoise, LatentEmpty, LatentAddNoise, LatentMask, LatentPreview]
