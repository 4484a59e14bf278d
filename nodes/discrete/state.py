"""DiscreteState: a discrete-diffusion sampler's whole state, batch-leading tensors, indexable like
the continuous State (docs/ARCHITECTURE.md, "Tokens"): `state[idx]` gathers particles (resampling,
forking), `DiscreteState.cat` joins them, `put` writes a sub-batch back."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

STILL_MASKED, GIVEN = -1, 0  # `revealed` values: not decoded yet / given by the template


@dataclass(frozen=True)
class DiscreteState:
    """Token ids with their masks, each row's time and step count, and when each position was decoded."""

    tokens: torch.Tensor  # (B, L) int64; the mask id where a position is masked (masked models)
    fixed: torch.Tensor  # (B, L) bool: given by the template; samplers never change these
    particle: torch.Tensor  # (B,) int64 noise keys
    step: torch.Tensor  # (B,) int64 steps taken (index into the schedule's times; first-hitting: events)
    t: torch.Tensor  # (B,) float64 current diffusion time in [0, 1] (1: all noise, 0: clean)
    revealed: torch.Tensor  # (B, L) int64: step (1-based) that gave the current token, GIVEN, or STILL_MASKED
    history: tuple[torch.Tensor, ...] = ()  # each (B, ...): sampler-specific carry (meaning fixed by the sampler)

    @classmethod
    def start(cls, tokens: torch.Tensor, fixed: torch.Tensor, particle: torch.Tensor) -> DiscreteState:
        """Rows at t = 1, step 0; fixed positions count as GIVEN, the others as STILL_MASKED."""
        b = tokens.shape[0]
        revealed = torch.where(fixed, GIVEN, STILL_MASKED).to(torch.long)  # (B, L)
        return cls(tokens=tokens, fixed=fixed, particle=particle.to(tokens.device, torch.long),
                   step=torch.zeros(b, dtype=torch.long, device=tokens.device),
                   t=torch.ones(b, dtype=torch.float64, device=tokens.device), revealed=revealed)

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def masked(self, mask_id: int | None) -> torch.Tensor:
        """(B, L) bool: positions holding the mask token (none for uniform-noise models, mask_id None)."""
        if mask_id is None:
            return torch.zeros_like(self.fixed)
        return self.tokens == mask_id

    def replace(self, **changes: object) -> DiscreteState:
        return dataclasses.replace(self, **changes)

    def __getitem__(self, idx: torch.Tensor | Sequence[int] | slice | int) -> DiscreteState:
        idx = _index(idx, self.device)
        return DiscreteState(tokens=self.tokens[idx], fixed=self.fixed[idx], particle=self.particle[idx],
                             step=self.step[idx], t=self.t[idx], revealed=self.revealed[idx],
                             history=tuple(h[idx] for h in self.history))

    def put(self, idx: torch.Tensor, sub: DiscreteState) -> DiscreteState:
        """This state with rows idx (K,) replaced by sub's K rows (histories must match in layout)."""
        def scatter(whole: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
            out = whole.clone()
            out[idx] = part
            return out
        return DiscreteState(tokens=scatter(self.tokens, sub.tokens), fixed=scatter(self.fixed, sub.fixed),
                             particle=scatter(self.particle, sub.particle), step=scatter(self.step, sub.step),
                             t=scatter(self.t, sub.t), revealed=scatter(self.revealed, sub.revealed),
                             history=tuple(scatter(h, s) for h, s in zip(self.history, sub.history)))

    def reveal(self, update: torch.Tensor, tokens: torch.Tensor, t_next: torch.Tensor) -> DiscreteState:
        """Write tokens (B, L) where update (B, L) bool (never at fixed positions), record this step
        (step + 1) as their reveal step, and move every row to step + 1 at time t_next (B,)."""
        update = update & ~self.fixed
        step = self.step + 1  # (B,)
        return self.replace(tokens=torch.where(update, tokens, self.tokens),
                            revealed=torch.where(update, step[:, None].expand_as(self.revealed), self.revealed),
                            step=step, t=t_next.to(torch.float64))

    @staticmethod
    def cat(states: Sequence[DiscreteState]) -> DiscreteState:
        return DiscreteState(tokens=torch.cat([s.tokens for s in states]), fixed=torch.cat([s.fixed for s in states]),
                             particle=torch.cat([s.particle for s in states]),
                             step=torch.cat([s.step for s in states]), t=torch.cat([s.t for s in states]),
                             revealed=torch.cat([s.revealed for s in states]),
                             history=tuple(torch.cat(hs) for hs in zip(*(s.history for s in states))))


def _index(idx: torch.Tensor | Sequence[int] | slice | int, device: torch.device) -> torch.Tensor | slice:
    """A gather index: a slice stays a slice; a bool mask becomes its True rows; ints become (K,) int64."""
    if isinstance(idx, slice):
        return idx
    t = torch.as_tensor(idx, device=device)
    if t.dtype == torch.bool:
        return t.nonzero().flatten()
    return t.reshape(-1).long()
