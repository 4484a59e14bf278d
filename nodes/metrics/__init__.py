"""Metric nodes: sample quality against exact references."""


def nodes() -> list[type]:
    from .sliced_wasserstein import SlicedWasserstein

    return [SlicedWasserstein]
