"""Shared by the parallel decoders (confidence, remasking): how many positions a step decodes, the
semi-autoregressive block a step works on, per-position scores and the top-k choice."""
from __future__ import annotations

import math

import torch

from ....graph.errors import NodeError
from ..schedule import MaskSchedule
from ..state import DiscreteState


def block_plan(schedule: MaskSchedule, length: int, block_length: int | None) -> tuple[int, int]:
    """(number of blocks, steps per block) for a row of `length` positions; NodeError naming the parameter
    when the blocks do not tile the row or the steps do not split evenly across them (LLaDA's rules)."""
    if block_length is None:
        return 1, schedule.steps
    if length % block_length:
        raise NodeError(f"parameter 'block_length' ({block_length}) must divide the sequence length ({length})")
    blocks = length // block_length
    if schedule.steps % blocks:
        raise NodeError(f"the schedule's steps ({schedule.steps}) must be a multiple of the number of blocks "
                        f"({blocks} = length {length} / block_length {block_length})")
    return blocks, schedule.steps // blocks


def decode_counts(schedule: MaskSchedule, holes: torch.Tensor, local_step: torch.Tensor,
                  steps_per_block: int) -> torch.Tensor:
    """(B,) how many of a block's holes (B,) local step j (B,) decodes: round(H alpha(tau_{j+1})) -
    round(H alpha(tau_j)) on the block's own grid tau_j = 1 - j / steps_per_block, all left at the last."""
    tau = 1.0 - local_step.to(torch.float64) / steps_per_block  # (B,)
    tau_next = 1.0 - (local_step + 1).to(torch.float64) / steps_per_block
    h = holes.to(torch.float64)
    before = torch.round(h * schedule.alpha(tau))
    after = torch.where(local_step + 1 >= steps_per_block, h, torch.round(h * schedule.alpha(tau_next)))
    return (after - before).clamp(min=0).long()  # (B,)


def block_window(state: DiscreteState, blocks: int, steps_per_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, L) bool positions of each row's current block, (B,) local step within it)."""
    length = state.length
    block = (state.step // steps_per_block).clamp(max=blocks - 1)  # (B,)
    width = length // blocks
    pos = torch.arange(length, device=state.device)[None, :]  # (1, L)
    inside = (pos >= (block * width)[:, None]) & (pos < ((block + 1) * width)[:, None])  # (B, L)
    return inside, state.step - block * steps_per_block


def position_scores(logp: torch.Tensor, chosen: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, L) float64 readiness of each position from p(x0 | x_t) (B, L, V) and the drawn tokens (B, L):
    confidence p(chosen) (Chang et al. 2022), margin p1 - p2 (Kim et al. 2025), or -entropy."""
    p = logp.to(torch.float64).exp()  # (B, L, V)
    if kind == "confidence":
        return p.gather(-1, chosen[..., None])[..., 0]
    if kind == "margin":
        top = p.topk(2, dim=-1).values  # (B, L, 2)
        return top[..., 0] - top[..., 1]
    if kind == "entropy":
        plogp = torch.where(p > 0, p * logp.to(torch.float64), torch.zeros_like(p))
        return plogp.sum(-1)
    raise NodeError(f"unknown score {kind!r}")


def top_k_positions(scores: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: each row's k (B,) eligible positions of highest score (ties: the lower index)."""
    s = torch.where(eligible, scores, torch.full_like(scores, -math.inf))
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices  # (B, L)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(s.shape[1], device=s.device).expand_as(order))
    return (rank < k[:, None]) & eligible
