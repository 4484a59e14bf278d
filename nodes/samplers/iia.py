"""sampler.iia: improved integration approximation around a base ODE solver (Zhang, Niwa and Kleijn 2023, "On
Accelerating Diffusion-Based Sampling Processes via Improved Integration Approximation", ICLR 2024).

IIA keeps the base solver's step and adds, per step i, correction terms with coefficients fitted once by
least squares (MMSE over a calibration batch) against a fine-grained integration of the same interval:
    x_{i+1} = base_step(x_i) + sum_k gamma_{i,k} f_k,    f_1 = D_i - D_{i-1},  f_2 = D_{i-1} - D_{i-2},
with D_j the base solver's x0 estimates (State.denoised; no extra evaluation). The fit is in
nodes/samplers/iia_fit.py; its output is a plain list of coefficient rows, so a found configuration is this
node's `coefficients` parameter in a workflow.

Departure: the paper's per-solver feature sets (IIA-EDM's gradient and state differences, IIA-DDIM's and
IIA-DPM-Solver's x0-estimate differences, its section 4) were not reachable through search beyond their
summaries; this node uses differences of successive x0 estimates for every base solver, the IIA-DDIM-style
choice, which are zero on straight paths and cost no evaluation. All-zero coefficients (the default) return
the base solver's states unchanged, bit for bit."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import WrappedSampler

FEATURES = 2  # x0-estimate differences kept: f_1, f_2


@node("sampler.iia", version=1)
class Iia(Node):
    """Implements improved integration approximation (Zhang et al. 2023, IIA) around any deterministic sampler."""

    coefficients: list[list[float]] = Field(
        default_factory=list, description="gamma rows, one per step (missing rows and entries are 0), each "
                                          "[gamma_1, gamma_2] weighting D_i - D_{i-1} and D_{i-1} - D_{i-2}; "
                                          "sampler.iia_fit finds them")

    def run(self, sampler: Sampler) -> Sampler:
        """`sampler` with the fitted correction terms added to each step."""
        if any(len(row) > FEATURES for row in self.coefficients):
            raise NodeError(f"sampler.iia: each row of 'coefficients' has at most {FEATURES} entries, got "
                            f"{[len(r) for r in self.coefficients]}")
        return Improved(inner=sampler, coefficients=[list(map(float, r)) for r in self.coefficients])


class Improved(WrappedSampler):
    """A base sampler with IIA's correction terms; order, cost and noise are the base's."""

    coefficients: list[list[float]]

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: (D_{i-1}, D_{i-2}, *the base's history)."""
        base = self.inner.init(x, sigmas, particle)
        return base.replace(history=(torch.zeros_like(x),) * FEATURES + base.history)

    def table(self, steps: int, like: torch.Tensor) -> torch.Tensor:
        """gamma (S, FEATURES) in x's dtype, zero-padded."""
        out = torch.zeros(steps, FEATURES, dtype=like.dtype, device=like.device)
        for i, row in enumerate(self.coefficients[:steps]):
            out[i, :len(row)] = torch.tensor(row, dtype=like.dtype)
        return out

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """The base step, plus sum_k gamma_{i,k} f_k where the features exist (step >= k)."""
        out, feats = self.base_step(denoise, state, noise)
        if not any(any(v != 0 for v in row) for row in self.coefficients):
            return out
        gamma = self.table(state.sigmas.numel() - 1, out.x)[state.step]  # (B, FEATURES)
        x = out.x + sum(bcast(gamma[:, k], out.x) * f for k, f in enumerate(feats))  # (B, ...)
        return out.replace(x=x)

    def base_step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> tuple[State, list[torch.Tensor]]:
        """The base sampler's step (with this wrapper's history) and the features f_1, f_2 (B, ...) each, zero
        where a step has too few past estimates."""
        past, inner_history = state.history[:FEATURES], state.history[FEATURES:]
        out = self.inner.step(denoise, state.replace(history=inner_history), noise)
        d = out.denoised  # (B, ...) D_i
        if d is None:
            raise NodeError(f"sampler.iia needs a base sampler that reports its x0 estimate; "
                            f"{type(self.inner).__name__} does not")
        estimates = [d, *past]  # D_i, D_{i-1}, D_{i-2}
        feats = [torch.where(bcast(state.step >= k + 1, d), estimates[k] - estimates[k + 1], 0.0)
                 for k in range(FEATURES)]  # (B, ...) each
        return out.replace(history=(d, *past[:-1]) + out.history), feats
