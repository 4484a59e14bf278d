"""Discrete-diffusion draws from the run's NoiseSource, keyed by (seed, particle, step, slot) with one
number per (position, token): the same seed gives the same sequences whatever the batch split.

Categorical draws are exact Gumbel-max in float64 (53-bit uniforms). `precision="float32"` reproduces
the float32 sampling that Zheng et al. (2024, "Masked Diffusion Models are Secretly Time-Agnostic
Masked Models and Exploit Inaccurate Categorical Sampling", Sec. 4) show lowers the effective
temperature: uniforms on torch.rand's 2^-24 grid and MDLM's `probs / (1e-10 - log(u + 1e-10))`
race in float32. It exists to demonstrate the bug (benchmarks, tests), never as a default."""
from __future__ import annotations

from typing import Literal

import torch

from ...graph.errors import NodeError
from ..core.noise import NoiseSource

Precision = Literal["float64", "float32"]

# slots: one per kind of choice made at a step, so no two choices share numbers
TOKEN, UNMASK, TIME, REMASK, ORDER, ACCEPT, RESAMPLE = 0, 1, 2, 3, 4, 5, 6
INIT = 7  # the uniform tokens a uniform-noise model's holes start from (template.py)
VALUE = 8  # x0 draws of search strategies' value estimates


def uniform(noise: NoiseSource, particle: torch.Tensor, step: torch.Tensor | int, shape: tuple[int, ...],
            slot: int) -> torch.Tensor:
    """(B, *shape) float64 uniforms in (0, 1), 53-bit."""
    return noise.uniform(particle, step, shape, slot=slot)


def categorical(noise: NoiseSource, logp: torch.Tensor, particle: torch.Tensor, step: torch.Tensor | int,
                slot: int = TOKEN, precision: Precision = "float64") -> torch.Tensor:
    """(B, L) int64 draws from exp(logp) (B, L, V) at every position, keys (particle, step, slot)."""
    b, length, v = logp.shape
    if bool((~torch.isfinite(logp).any(-1)).any()):
        raise NodeError("a position's clean-token distribution gives no token positive probability (all -inf)")
    if precision == "float64":
        keys = logp.to(torch.float64) + noise.gumbel(particle, step, (length, v), slot=slot)  # (B, L, V)
        return keys.argmax(-1)
    u = noise.uniform(particle, step, (length, v), slot=slot)  # (B, L, V) float64
    u32 = (torch.floor(u * 2.0 ** 24) * 2.0 ** -24).to(torch.float32)  # torch.rand's float32 grid
    race = 1e-10 - torch.log(u32 + 1e-10)  # (B, L, V) float32 Exp(1) draws, as MDLM computes them
    return (torch.exp(logp.to(torch.float32)) / race).argmax(-1)
