"""Reward nodes: batched, order-preserving functions of clean samples x0 (B, ...) -> (B,)."""


def nodes() -> list[type]:
    from .classifier import RewardClassifier
    from .linear import RewardLinear
    from .quadratic import RewardQuadratic
    from .tilted_gmm import RewardTiltedGMM

    return [RewardLinear, RewardQuadratic, RewardTiltedGMM, RewardClassifier]
