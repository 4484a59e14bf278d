"""Exact targets of the search tests: the product of two diagonal Gaussian mixtures (closed form) and
powers / geometric means of mixtures whose components sit at the same means and are well separated."""
from __future__ import annotations

import math

import torch

from samplegraph.nodes.models.gaussian_mixture import GaussianMixture


def product_mixture(p: GaussianMixture, q: GaussianMixture) -> GaussianMixture:
    """p q / Z exactly: component (i, j) is N_i N_j = N(mu_i; mu_j, s_i^2 + s_j^2) N(x; mu_ij, s_ij^2)."""
    v1, v2 = p.stds[:, None] ** 2, q.stds[None] ** 2  # (K, 1, D), (1, L, D)
    m1, m2 = p.means[:, None], q.means[None]  # (K, 1, D), (1, L, D)
    var = 1 / (1 / v1 + 1 / v2)  # (K, L, D)
    mean = var * (m1 / v1 + m2 / v2)  # (K, L, D)
    s = v1 + v2  # (K, L, D)
    log_c = -0.5 * ((m1 - m2) ** 2 / s + torch.log(2 * math.pi * s)).sum(-1)  # (K, L)
    logw = p.weights.log()[:, None] + q.weights.log()[None] + log_c  # (K, L)
    d = p.means.shape[1]
    return GaussianMixture(mean.reshape(-1, d), var.sqrt().reshape(-1, d), torch.softmax(logw.flatten(), 0))


def aligned_power(mixtures: list[GaussianMixture], exps: list[float]) -> GaussianMixture:
    """prod_i p_i^{a_i} / Z for mixtures with the same component means and far-apart components (the
    cross terms are neglected: exp(-gap^2 / (2 std^2)) small): component k ~ prod_i N(mu_k, s_ik^2)^{a_i}."""
    mu = mixtures[0].means  # (K, D)
    prec = sum(a / m.stds ** 2 for m, a in zip(mixtures, exps))  # (K, D)
    logw = sum(a * m.weights.log() for m, a in zip(mixtures, exps))  # (K,)
    logw = logw + sum(-0.5 * a * torch.log(2 * math.pi * m.stds ** 2).sum(-1) for m, a in zip(mixtures, exps))
    logw = logw + 0.5 * torch.log(2 * math.pi / prec).sum(-1)  # (K,)
    return GaussianMixture(mu, prec.rsqrt(), torch.softmax(logw, 0))
