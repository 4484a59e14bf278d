"""Model nodes: networks and analytic models seen as Denoisers."""


def nodes() -> list[type]:
    from .gmm import ModelGMM

    return [ModelGMM]
