"""State: a sampler's whole state as a frozen dataclass of batch-leading tensors.

`state[idx]` gathers particles (resampling, forking); `State.cat` joins them. The noise
schedule is shared; each particle carries its own step index, so particles at different
noise levels can share one batched denoiser call."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) so it broadcasts against `like` (B, ...)."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


@dataclass(frozen=True)
class State:
    """x, per-particle step index and id, last x0 estimate, and solver-specific history."""

    x: torch.Tensor  # (B, ...)
    sigmas: torch.Tensor  # (S+1,) shared schedule, x's dtype and device
    step: torch.Tensor  # (B,) int64 index into sigmas
    particle: torch.Tensor  # (B,) int64 ids: noise keys
    denoised: torch.Tensor | None = None  # (B, ...)
    history: tuple[torch.Tensor, ...] = ()  # each (B, ...), meaning fixed by the sampler
    memory: tuple[torch.Tensor, ...] = ()  # each (B, ...): a stateful Denoiser's per-particle memory (run_steps)

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def sigma(self) -> torch.Tensor:  # (B,)
        return self.sigmas[self.step]

    @property
    def sigma_next(self) -> torch.Tensor:  # (B,) defined for unfinished particles (run_steps steps only those)
        return self.sigmas[self.step + 1]

    @property
    def sigma_prev(self) -> torch.Tensor:  # (B,) the level of the previous step (sigma itself at step 0)
        return self.sigmas[(self.step - 1).clamp(min=0)]

    @property
    def done(self) -> torch.Tensor:  # (B,) bool
        return self.step >= self.sigmas.numel() - 1

    def advance(self, x: torch.Tensor, denoised: torch.Tensor | None = None,
                history: tuple[torch.Tensor, ...] | None = None) -> State:
        """The state one step later: new x, estimate and history; step + 1."""
        return State(x=x, sigmas=self.sigmas, step=self.step + 1, particle=self.particle, denoised=denoised,
                     history=self.history if history is None else history, memory=self.memory)

    def replace(self, **changes: object) -> State:
        return dataclasses.replace(self, **changes)

    def __getitem__(self, idx: torch.Tensor | slice | Sequence[int] | int) -> State:
        """Gather particles: every batch-leading tensor is indexed the same way."""
        if isinstance(idx, int):
            idx = [idx]
        if not isinstance(idx, slice):
            idx = torch.as_tensor(idx, dtype=torch.long, device=self.x.device)
        return State(x=self.x[idx], sigmas=self.sigmas, step=self.step[idx], particle=self.particle[idx],
                     denoised=None if self.denoised is None else self.denoised[idx],
                     history=tuple(h[idx] for h in self.history), memory=tuple(m[idx] for m in self.memory))

    def put(self, idx: torch.Tensor, part: State) -> State:
        """This state with particles `idx` (A,) replaced by `part` (A particles): the inverse of state[idx]."""
        def into(full: torch.Tensor | None, sub: torch.Tensor) -> torch.Tensor:
            base = sub.new_zeros((self.batch, *sub.shape[1:])) if full is None else full
            return base.index_copy(0, idx, sub)

        history = self.history or (None,) * len(part.history)
        memory = self.memory or (None,) * len(part.memory)
        return State(x=into(self.x, part.x), sigmas=self.sigmas, step=into(self.step, part.step),
                     particle=self.particle,
                     denoised=None if part.denoised is None else into(self.denoised, part.denoised),
                     history=tuple(into(h, p) for h, p in zip(history, part.history)),
                     memory=tuple(into(m, p) for m, p in zip(memory, part.memory)))

    @staticmethod
    def cat(states: Sequence[State]) -> State:
        """Concatenate particles of states that share one schedule and history layout."""
        first = states[0]

        def join(get):  # noqa: ANN001
            parts = [get(s) for s in states]
            return None if parts[0] is None else torch.cat(parts)

        return State(x=join(lambda s: s.x), sigmas=first.sigmas, step=join(lambda s: s.step),
                     particle=join(lambda s: s.particle), denoised=join(lambda s: s.denoised),
                     history=tuple(torch.cat([s.history[i] for s in states]) for i in range(len(first.history))),
                     memory=tuple(torch.cat([s.memory[i] for s in states]) for i in range(len(first.memory))))


def state_tensors(state: State) -> dict[str, torch.Tensor]:
    """A checkpoint of `state` as named tensors (sigmas excluded: they come from the node's inputs)."""
    out = {"x": state.x, "step": state.step, "particle": state.particle}  # (B, ...), (B,), (B,)
    if state.denoised is not None:
        out["denoised"] = state.denoised  # (B, ...)
    out.update({f"history/{i}": h for i, h in enumerate(state.history)})
    out.update({f"memory/{i}": m for i, m in enumerate(state.memory)})
    return out


def state_from_tensors(tensors: dict[str, torch.Tensor], sigmas: torch.Tensor) -> State:
    """The inverse of `state_tensors`, on sigmas' device, with the schedule `sigmas` (S+1,)."""
    dev = sigmas.device

    def seq(prefix: str) -> tuple[torch.Tensor, ...]:
        n = sum(1 for k in tensors if k.startswith(prefix))
        return tuple(tensors[f"{prefix}{i}"].to(dev) for i in range(n))

    denoised = tensors.get("denoised")
    return State(x=tensors["x"].to(dev), sigmas=sigmas, step=tensors["step"].to(dev),
                 particle=tensors["particle"].to(dev), denoised=None if denoised is None else denoised.to(dev),
                 history=seq("history/"), memory=seq("memory/"))
