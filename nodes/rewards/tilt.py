"""Exact tilted targets: a diagonal Gaussian mixture times exp(lambda r(x)) for linear or quadratic r
is again a diagonal Gaussian mixture (completing the square per component)."""
from __future__ import annotations

import math

import torch

from ...graph.errors import NodeError
from ..models.gaussian_mixture import GaussianMixture
from .reward import LinearReward, QuadraticReward, Reward


def tilted(gmm: GaussianMixture, reward: Reward, lam: float) -> GaussianMixture:
    """The normalised density p(x) exp(lam r(x)) / Z as a GaussianMixture (float64)."""
    mu, var, logw = gmm.means, gmm.stds ** 2, gmm.weights.log()  # (K, D), (K, D), (K,)
    if isinstance(reward, LinearReward):
        a = reward.a.to(mu)[None]  # (1, D)
        means = mu + lam * var * a  # (K, D)
        logw = logw + lam * (mu * a).sum(-1) + 0.5 * lam ** 2 * (a ** 2 * var).sum(-1)  # (K,)
        new_var = var
    elif isinstance(reward, QuadraticReward):
        if lam < 0:
            raise NodeError("a quadratic reward with lambda < 0 has no normalisable tilt; use lambda >= 0")
        if lam == 0:
            return GaussianMixture(mu, var.sqrt(), gmm.weights)
        c, s2 = reward.center.to(mu)[None], reward.scale ** 2  # (1, D), float
        new_var = 1.0 / (1.0 / var + lam / s2)  # (K, D)
        means = new_var * (mu / var + lam * c / s2)  # (K, D)
        marg = var + s2 / lam  # (K, D): c ~ N(mu, var + s^2/lam) up to a k-free constant
        logw = logw - 0.5 * ((c - mu) ** 2 / marg + torch.log(marg) + math.log(2 * math.pi)).sum(-1)  # (K,)
    else:
        raise NodeError(f"no closed-form tilt for {type(reward).__name__}; use reward.linear or reward.quadratic")
    return GaussianMixture(means, new_var.sqrt(), torch.softmax(logw, 0))
