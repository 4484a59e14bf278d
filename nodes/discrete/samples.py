"""DiscreteSamples: the sequences a discrete sampler returns, as Generations (io.save_texts writes
them as JSONL; the CLI summarises them) plus the full token grid and the step that decoded each
position (the unmasking order, drawn by io.save_unmask_order)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..lm.generations import Generations
from .denoiser import DiscreteDenoiser
from .state import DiscreteState


@dataclass(frozen=True)
class DiscreteSamples(Generations):
    """Generations whose token ids are whole sequences (L each), with their reveal steps."""

    tokens: torch.Tensor = None  # type: ignore[assignment]  # (N, L) int64
    revealed: torch.Tensor = None  # type: ignore[assignment]  # (N, L) int64 (state.py: GIVEN, STILL_MASKED, step)
    fixed: torch.Tensor = None  # type: ignore[assignment]  # (N, L) bool: given by the template

    @classmethod
    def of_state(cls, state: DiscreteState, den: DiscreteDenoiser, log_weight: torch.Tensor | None = None,
                 group: torch.Tensor | None = None) -> DiscreteSamples:
        tokens = state.tokens.detach().cpu()
        rows = [tokens[i].tolist() for i in range(state.batch)]
        finished = ~state.masked(den.mask_id).any(-1).cpu()  # (N,)
        return cls(texts=tuple(den.decode(r) for r in rows), token_ids=tuple(tuple(r) for r in rows),
                   log_weight=(torch.zeros(state.batch, dtype=torch.float64) if log_weight is None
                               else log_weight.detach().cpu().to(torch.float64)),
                   group=torch.zeros(state.batch, dtype=torch.long) if group is None else group.detach().cpu().long(),
                   finished=finished, tokens=tokens, revealed=state.revealed.detach().cpu(),
                   fixed=state.fixed.detach().cpu())

    def cache_encode(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return ({"tokens": self.tokens, "revealed": self.revealed, "fixed": self.fixed, "log_weight": self.log_weight,
                 "group": self.group, "finished": self.finished}, {"texts": list(self.texts)})

    @classmethod
    def cache_decode(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> DiscreteSamples:
        tokens = tensors["tokens"]
        return cls(texts=tuple(meta["texts"]), token_ids=tuple(tuple(r) for r in tokens.tolist()),
                   log_weight=tensors["log_weight"], group=tensors["group"], finished=tensors["finished"].bool(),
                   tokens=tokens, revealed=tensors["revealed"], fixed=tensors["fixed"].bool())
