"""schedule.gits: a time schedule found by dynamic programming over a fine grid (Chen et al. 2024, GITS).

"On the Trajectory Regularity of ODE-based Diffusion Sampling" (ICML 2024): sampling trajectories are
regular, so a few warm-up trajectories of a fine teacher solve give the cost of jumping between any two
levels of the fine grid, and dynamic programming picks the cheapest path of `steps` jumps. As in the
authors' code: the teacher is Euler on the fine grid (here a Karras grid with a final sigma = 0); the cost
C[i, j] of the jump i -> j is the mean L2 distance between one Euler step from teacher point i with the
teacher's slope there and teacher point j; the value of a path is C[p0, p1] + coeff (C[p1, p2] + coeff
(...)), so coeff > 1 favours paths whose later jumps are cheap. Their optional AFS variant (a first
analytical step) is left out."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.denoiser import Denoiser
from ..core.sigmas import Sigmas
from .calibration import Calibrated, euler_trajectory
from .common import F64
from .karras import Karras


@node("schedule.gits", version=1)
class GITS(Calibrated):
    """Implements the GITS dynamic-programming time schedule of Chen et al. (2024), fitted on warm-up trajectories."""

    steps: int = Field(5, ge=1, description="solver steps of the schedule found (jumps on the fine grid)")
    grid: int = Field(60, ge=2, description="fine teacher grid: Karras levels before the final 0")
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)
    rho: float = Field(7.0, gt=0, description="Karras rho of the fine grid")
    coeff: float = Field(1.15, gt=0, description="weight of the remaining path per jump (GITS uses 1.15 on CIFAR-10)")

    def run(self, denoise: Denoiser) -> Sigmas:
        """The `steps` + 1 grid levels on the cheapest path from sigma_max to 0."""
        if self.steps > self.grid:
            raise NodeError(f"schedule.gits: 'steps' ({self.steps}) must be at most 'grid' ({self.grid}), the "
                            f"number of fine levels the path can jump between")
        fine = Karras(steps=self.grid, sigma_min=self.sigma_min, sigma_max=self.sigma_max, rho=self.rho).run()
        cost = jump_costs(denoise, self.noise(self.sigma_max), fine.values)  # (G + 1, G + 1)
        path = dp_path(cost, self.steps, self.coeff)  # steps + 1 indices
        return Sigmas(fine.values[path].clone())  # (steps + 1,)


def jump_costs(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """(L, L) float64 C[i, j] (i < j; inf elsewhere): mean over particles of ||x_i + (s_j - s_i) d_i - x_j||
    on the Euler teacher trajectory x (L, N, ...) with slopes d over the levels sigmas (L,)."""
    points, slopes = euler_trajectory(denoise, x, sigmas.to(x.dtype))  # (L, N, ...), (L - 1, N, ...)
    n = sigmas.numel()
    cost = torch.full((n, n), float("inf"), dtype=F64)
    for i in range(n - 1):
        step = (sigmas[i + 1:] - sigmas[i]).to(x.dtype)  # (J,)
        jumped = points[i] + step.view(-1, *[1] * x.ndim) * slopes[i]  # (J, N, ...)
        cost[i, i + 1:] = (jumped - points[i + 1:]).flatten(2).double().norm(dim=2).mean(dim=1)
    return cost


def dp_path(cost: torch.Tensor, steps: int, coeff: float) -> list[int]:
    """The indices 0 = p0 < p1 < ... < p_steps = L - 1 minimising sum_k coeff^k C[p_k, p_k+1] over the
    cost matrix (L, L) (GITS eq. for V: V[j, 1] = C[j, L-1], V[j, k] = min_i C[j, i] + coeff V[i, k-1])."""
    n = cost.shape[0]
    if not 1 <= steps <= n - 1:
        raise NodeError(f"dp_path: {steps} jumps cannot join the {n} levels' ends (need 1 .. {n - 1})")
    value = torch.full((steps + 1, n), float("inf"), dtype=F64)  # value[k, j]: best k jumps from j to the end
    choice = torch.zeros((steps + 1, n), dtype=torch.long)
    value[1] = cost[:, n - 1]
    inner = cost[:, :n - 1].to(F64)  # (L, L - 1) first jump to an inner level
    for k in range(2, steps + 1):
        total = inner + coeff * value[k - 1, :n - 1].unsqueeze(0)  # (L, L - 1): jump j -> i, then k - 1 jumps
        value[k], choice[k] = total.min(dim=1)
    path, j = [0], 0
    for k in range(steps, 1, -1):
        j = int(choice[k, j])
        path.append(j)
    return [*path, n - 1]
