"""model.step_cache: reuse each network block's output between steps while its input changes little.

Criteria (block_cache.py runs them):
- rel_l1: a block reuses its cached residual while the relative L1 change of its input (hidden state
  and conditioning) since it last ran is below `threshold` (the change measure of Delta-DiT / FORA /
  TeaCache-style step caching);
- sada: the same, but only on calls where SADA's stability criterion holds for the particle
  (Jiang et al. 2025, "SADA: Stability-guided Adaptive Diffusion Acceleration", authors' code
  sada/solver.py): with the last three ODE drifts d_n, d_n-1, d_n-2 (d = (x - x0) / sigma) and the
  step h = sigma_next - sigma_n that led to the current x, the multistep prediction is
  x_hat = x_n + h (0.625 d_n + 0.75 d_n-1 - 0.375 d_n-2) (their coefficients); the trajectory is
  stable when mean((x - x_hat) * (d_n - 2 d_n-1 + d_n-2)) <= 0.
Departures from SADA: SADA skips the whole model call and extrapolates x0 (step-wise sparsity) or
prunes tokens; here its criterion gates block reuse. Its drifts are in VP time with delta = 1/N and
its residual is the solver's sigma-space Euler step against that prediction; here everything is in
sigma (the space of our samplers) and the residual uses the state the sampler actually produced.
With sampler.euler that residual is exactly 0.375 h (d_n - 2 d_n-1 + d_n-2), so the criterion is
always true (h < 0) and only `threshold` decides; with multistep or stochastic samplers it is not.
`max_reuse` is SADA's max_interval: consecutive reuses before a forced recomputation."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..api import Node, node
from ..core.model import Model
from .block_cache import BlockCached, BlockMemory, ReusePolicy

SADA_WEIGHTS = (0.625, 0.75, -0.375)  # sada/solver.py: the prediction's weights of d_n, d_n-1, d_n-2


class StepCachePolicy(ReusePolicy):
    """Each block its own group; reuse while its input's relative L1 change < threshold (SADA-gated)."""

    name = "model.step_cache"

    def __init__(self, threshold: float, criterion: str, max_reuse: int | None):
        self.threshold, self.criterion, self.max_reuse = threshold, criterion, max_reuse

    def groups(self, blocks: int) -> list[range]:
        return [range(i, i + 1) for i in range(blocks)]

    def reuse(self, group: int, change: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
        ok = change < self.threshold  # (B,); threshold 0: never
        return ok if self.max_reuse is None else ok & (runs < self.max_reuse)

    def gate(self, x: torch.Tensor, sigma: torch.Tensor, memory: BlockMemory) -> torch.Tensor:
        if self.criterion != "sada":
            return super().gate(x, sigma, memory)
        if len(memory.history) < 5:  # fewer than three drifts so far
            return torch.zeros_like(sigma, dtype=torch.bool)
        return sada_stable(x, sigma, *memory.history)

    def history(self, x: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor,
                memory: BlockMemory) -> tuple[torch.Tensor, ...]:
        """(x_n, sigma_n, d_n, d_n-1, d_n-2) after this call, shifting in the new drift."""
        if self.criterion != "sada":
            return ()
        safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))  # (B,) drift 0 at sigma = 0
        d = (x - x0) / safe.reshape(-1, *([1] * (x.ndim - 1)))  # (B, ...)
        return (x, sigma, d, *memory.history[2:4])  # keep the two newest earlier drifts


def sada_stable(x: torch.Tensor, sigma: torch.Tensor, x_prev: torch.Tensor, sigma_prev: torch.Tensor,
                d0: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
    """(B,) SADA's stability criterion at the current x (B, ...), sigma (B,) from the previous call's
    x_prev, sigma_prev and drifts d0 = d_n, d1 = d_n-1, d2 = d_n-2."""
    a, b, c = SADA_WEIGHTS
    h = (sigma - sigma_prev).reshape(-1, *([1] * (x.ndim - 1)))  # (B, 1, ...)
    predicted = x_prev + h * (a * d0 + b * d1 + c * d2)  # (B, ...)
    momentum = (x - predicted) * (d0 - 2 * d1 + d2)  # (B, ...)
    return momentum.flatten(1).mean(1) <= 0


@node("model.step_cache")
class ModelStepCache(Node):
    """Block step caching by relative input change (TeaCache-style), optionally gated by SADA (Jiang et al. 2025)."""

    threshold: float = Field(0.05, ge=0.0, description="reuse a block while its input's relative L1 change since "
                             "it last ran is below this; 0 = never (bit-identical to the plain model)")
    criterion: Literal["rel_l1", "sada"] = Field("rel_l1", description="rel_l1: the threshold alone; sada: only "
                                                 "where SADA's stability criterion holds as well")
    max_reuse: int | None = Field(None, ge=1, description="consecutive reuses of a block before it must run "
                                  "(SADA's max_interval); None = no limit")

    def run(self, model: Model) -> Model:
        """The stateful cached model (connect it to 'sample'); the report counts blocks computed and skipped."""
        net = BlockCached.check(model, "model.step_cache")
        return BlockCached(net, StepCachePolicy(self.threshold, self.criterion, self.max_reuse))
