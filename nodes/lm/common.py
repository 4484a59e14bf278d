"""Shared plumbing of the token strategies: rows per prompt, the token budget, the report."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .model import LanguageModel
from .prompt import Prompts
from .state import TokenState


def start_rows(lm: LanguageModel, prompts: Prompts, per_prompt: int, max_new_tokens: int,
               device: torch.device | str = "cpu") -> tuple[TokenState, torch.Tensor, int]:
    """A TokenState of len(prompts) x per_prompt rows (prompt-major), their group ids (B,) and the group count.
    Particle ids are the row numbers, so row r draws the same noise however the batch is later cut."""
    ids = [lm.encode(t) for t in prompts.texts]
    rows = [p for p in ids for _ in range(per_prompt)]
    particle = torch.arange(len(rows), dtype=torch.long, device=device)
    group = torch.arange(len(prompts.texts), device=device).repeat_interleave(per_prompt)
    return lm.start(rows, particle, max_new_tokens), group, len(prompts.texts)


@dataclass
class TokenBudget:
    """LM calls (batched), row-evaluations, generated tokens per group and wall time."""

    groups: int
    lm_calls: int = 0
    lm_rows: int = 0
    tokens: torch.Tensor = field(default=None)  # type: ignore[assignment]  # (G,) int64
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        if self.tokens is None:
            self.tokens = torch.zeros(self.groups, dtype=torch.long)

    def call(self, lm: LanguageModel, state: TokenState, window: int = 1) -> tuple[torch.Tensor, TokenState]:
        """lm.next_logprobs, counted."""
        self.lm_calls += 1
        self.lm_rows += state.batch
        return lm.next_logprobs(state, window)

    def count_tokens(self, group: torch.Tensor, appended: torch.Tensor) -> None:
        """Account appended (B,) bool tokens to their groups (B,) (either on any device)."""
        self.tokens += torch.bincount(group.cpu()[appended.cpu()], minlength=self.groups)

    def report(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        total = int(self.tokens.sum())
        return {"lm_calls": self.lm_calls, "lm_rows": self.lm_rows, "tokens_generated": total,
                "tokens_per_group": self.tokens.tolist(), "wall_s": round(wall, 6),
                "tokens_per_s": round(total / wall, 3) if wall > 0 else None}

