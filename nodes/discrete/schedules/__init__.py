"""Mask schedules (nodes/discrete/schedule.py): linear, cosine, polynomial, geometric."""


def nodes() -> list[type]:
    from .cosine import Cosine
    from .geometric import Geometric
    from .linear import Linear
    from .polynomial import Polynomial

    return [Linear, Cosine, Polynomial, Geometric]
