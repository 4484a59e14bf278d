"""Reusing network blocks between sampler steps: the mechanism model.step_cache and model.deep_cache share.

A BlockNetwork (nodes/models/networks/blocks.py) runs embed -> blocks -> head. The blocks are cut
into groups; at each call a group either runs on the rows that need it, or adds the residual
(output - input) it produced the last time it ran for that particle, as the step-caching papers
reuse a block's output while its input barely changed (Delta-DiT, FORA, TeaCache; DeepCache for
the deep half of a UNet). Which rows reuse is a `ReusePolicy`'s decision: it sees each row's
relative L1 change of the group's input (h, e) since the group last ran, how many calls in a row
it has reused, and a per-row gate set before the network runs (DeepCache's refresh schedule,
SADA's stability test).

State: the caches are per particle, so the cached model is a stateful Denoiser: run_steps keeps
them in State.memory (docs/ARCHITECTURE.md) and they follow resampling and forking. Memory layout
(each (B, ...)): calls (B,), block evaluations computed (B,) and skipped (B,), then per group runs
(B,), input h, input e, residual, then the policy's own history. A group reuses nothing until it
has run once for that particle, and when no row reuses a group it runs on the whole batch exactly
as `run_blocks` does, so a policy that reuses nothing is bit-identical to the plain model.

The computed / skipped counts are accounting only (results never depend on them); run_steps puts
their totals in the node's report (`memory_metrics`: blocks_computed, blocks_skipped)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from ...graph.errors import NodeError
from ..core.denoiser import BoundDenoiser
from ..core.model import Model, ModelSampling
from ..core.state import bcast
from ..models.networks.blocks import BlockNetwork
from ..models.networks.conditional import ConditionalNetwork
from ..models.parametrisation import input_scale, network_time, to_x0


@dataclass
class GroupCache:
    """One block group's per-particle cache: consecutive reuses, last input (h, e) and residual."""

    runs: torch.Tensor  # (B,) int64 calls in a row this group reused
    h: torch.Tensor  # (B, ...) the group's input hidden state when it last ran
    e: torch.Tensor  # (B, E) the conditioning it last ran with
    residual: torch.Tensor  # (B, ...) its output - input then


@dataclass
class BlockMemory:
    """A batch's caches: calls and block evaluations per particle, one GroupCache per group, the policy's history."""

    calls: torch.Tensor  # (B,) int64; 0 = nothing cached yet
    computed: torch.Tensor  # (B,) int64 block evaluations run for the particle so far
    skipped: torch.Tensor  # (B,) int64 block evaluations it reused
    groups: list[GroupCache]
    history: tuple[torch.Tensor, ...] = field(default=())

    def pack(self) -> tuple[torch.Tensor, ...]:
        """As State.memory: calls, computed, skipped, (runs, h, e, residual) per group, history."""
        flat = [self.calls, self.computed, self.skipped]
        for g in self.groups:
            flat += [g.runs, g.h, g.e, g.residual]
        return (*flat, *self.history)

    @staticmethod
    def unpack(memory: tuple[torch.Tensor, ...], groups: int) -> BlockMemory:
        caches = [GroupCache(*memory[3 + 4 * i: 7 + 4 * i]) for i in range(groups)]
        return BlockMemory(memory[0], memory[1], memory[2], caches, tuple(memory[3 + 4 * groups:]))


class ReusePolicy(ABC):
    """When a block group may reuse its cached residual instead of running."""

    name: str = "block cache"  # the node's kind, for error messages

    @abstractmethod
    def groups(self, blocks: int) -> list[range]:
        """The block groups (consecutive index ranges covering 0..blocks-1)."""

    @abstractmethod
    def reuse(self, group: int, change: torch.Tensor, runs: torch.Tensor) -> torch.Tensor:
        """(B,) bool: rows that reuse `group`, from their input change (B,) and reuses in a row (B,)."""

    def gate(self, x: torch.Tensor, sigma: torch.Tensor, memory: BlockMemory) -> torch.Tensor:
        """(B,) bool: rows allowed to reuse anything in this call (checked before the network runs)."""
        return torch.ones_like(sigma, dtype=torch.bool)

    def history(self, x: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor,
                memory: BlockMemory) -> tuple[torch.Tensor, ...]:
        """The policy's history after this call (each (B, ...)); none by default."""
        return ()


def input_change(h: torch.Tensor, e: torch.Tensor, cache: GroupCache) -> torch.Tensor:
    """(B,) relative L1 change of a group's whole input (hidden state and conditioning) since it last ran."""
    num = (h - cache.h).flatten(1).abs().sum(1) + (e - cache.e).flatten(1).abs().sum(1)
    den = cache.h.flatten(1).abs().sum(1) + cache.e.flatten(1).abs().sum(1)
    return num / den.clamp_min(1e-30)


def run_group(net: BlockNetwork, span: range, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """h (B, ...) through blocks `span` in order."""
    for i in span:
        h = net.blocks[i](h, e)
    return h


class CachedRunner:
    """The network function `(x_in, t_in) -> out` of one call, reading and updating a BlockMemory."""

    def __init__(self, net: BlockNetwork, policy: ReusePolicy, label: int | torch.Tensor | None,
                 memory: BlockMemory | None, allowed: torch.Tensor):
        self.net, self.policy, self.label, self.memory = net, policy, label, memory
        self.allowed = allowed  # (B,) bool gate of this call
        self.groups = policy.groups(len(net.blocks))
        self.caches: list[GroupCache] = []
        self.computed = torch.zeros_like(allowed, dtype=torch.long)  # (B,) this call's block evaluations
        self.skipped = torch.zeros_like(allowed, dtype=torch.long)

    def __call__(self, x_in: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        h, e = self.net.embed(x_in, t_in, self.label)  # (B, ...), (B, E)
        for g, span in enumerate(self.groups):
            h = self.step_group(g, span, h, e)
        return self.net.head(h, e, x_in)  # (B, *shape)

    def step_group(self, g: int, span: range, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Group g's output (B, ...): run on the rows that do not reuse, cached residual on the others."""
        b = h.shape[0]
        if self.memory is None:
            reuse = torch.zeros(b, dtype=torch.bool, device=h.device)
            old = GroupCache(torch.zeros(b, dtype=torch.long, device=h.device), h, e, torch.zeros_like(h))
        else:
            old = self.memory.groups[g]
            seen = self.memory.calls > 0  # (B,)
            reuse = self.allowed & seen & self.policy.reuse(g, input_change(h, e, old), old.runs)  # (B,)
        run = ~reuse
        self.computed += len(span) * run.long()
        self.skipped += len(span) * reuse.long()
        if bool(run.all()):
            out = run_group(self.net, span, h, e)  # (B, ...) exactly run_blocks' arithmetic
            self.caches.append(GroupCache(torch.zeros_like(old.runs), h, e, out - h))
            return out
        idx = run.nonzero().squeeze(1)  # (R,)
        out = h + old.residual  # (B, ...)
        h_new, e_new, res = old.h.clone(), old.e.clone(), old.residual.clone()
        if idx.numel():
            part = run_group(self.net, span, h[idx], e[idx])  # (R, ...)
            out[idx] = part
            h_new[idx], e_new[idx], res[idx] = h[idx], e[idx], part - h[idx]
        self.caches.append(GroupCache(torch.where(reuse, old.runs + 1, 0), h_new, e_new, res))
        return out


class StatefulNetworkModel(Model):
    """A Model over a network model (`self.model`) whose calls keep per-particle memory: the wrapped model's
    sampling, and stateful (so search strategies and guidance that cannot carry the memory refuse it)."""

    model: ConditionalNetwork

    @property
    def sampling(self) -> ModelSampling:
        return self.model.sampling

    @property
    def stateful(self) -> bool:
        return True


class BlockCached(StatefulNetworkModel):
    """A class-conditional block network whose blocks a ReusePolicy may reuse between calls; stateful."""

    def __init__(self, model: ConditionalNetwork, policy: ReusePolicy):
        self.model, self.policy = model, policy

    @staticmethod
    def check(model: Model, kind: str) -> ConditionalNetwork:
        """`model` if it is a network with blocks (embed -> blocks -> head), else a NodeError naming `kind`."""
        if not isinstance(model, ConditionalNetwork) or not isinstance(model.net, BlockNetwork):
            inner = f" over {type(model.net).__name__}" if isinstance(model, ConditionalNetwork) else ""
            raise NodeError(f"{kind} needs a network model with blocks (embed -> blocks -> head, e.g. model.digits "
                            f"or model.mnist, optionally through model.condition); got {type(model).__name__}{inner}"
                            f" (analytic models and model.skip_blocks outputs have no block view)")
        return model

    def __repr__(self) -> str:
        return f"BlockCached({self.model!r}, {type(self.policy).__name__})"

    def to(self, device: torch.device) -> BlockCached:
        return BlockCached(self.model.to(device), self.policy)

    def unpack(self, memory: tuple[torch.Tensor, ...]) -> BlockMemory:
        return BlockMemory.unpack(memory, len(self.policy.groups(len(self.model.net.blocks))))

    def bound(self, memory: tuple[torch.Tensor, ...]) -> BlockCachedBound:
        return BlockCachedBound(self, self.unpack(memory) if memory else None)

    def memory_metrics(self, memory: tuple[torch.Tensor, ...]) -> dict[str, int]:
        """Block evaluations (rows x blocks) computed and skipped by the particles of `memory`."""
        m = self.unpack(memory)
        return {"blocks_computed": int(m.computed.sum()), "blocks_skipped": int(m.skipped.sum())}

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NodeError(f"{self.policy.name} keeps per-particle block caches that only the 'sample' node carries "
                        f"between steps; connect it directly to 'sample' (guidance nodes, model.stitch, "
                        f"sample.paradigms and search strategies call it without its caches)")


class BlockCachedBound(BoundDenoiser):
    """BlockCached bound to one batch's BlockMemory (None before the first call)."""

    def __init__(self, cached: BlockCached, memory: BlockMemory | None):
        self.cached, self.state = cached, memory

    @property
    def memory(self) -> tuple[torch.Tensor, ...]:
        return () if self.state is None else self.state.pack()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 (B, ...) of x (B, ...) at sigma (B,), reusing cached blocks where the policy allows."""
        c, m = self.cached, self.cached.model
        if self.state is not None and x.shape[0] != self.state.calls.shape[0]:
            raise NodeError(f"{c.policy.name}: the sampler evaluated {x.shape[0]} of {self.state.calls.shape[0]} "
                            f"particles in one call, so their caches cannot be matched; use a sampler that "
                            f"evaluates the whole batch (not sampler.restart)")
        dtype = next(m.net.parameters()).dtype
        xd, sd = x.to(dtype), sigma.to(dtype)  # (B, ...), (B,)
        allowed = torch.zeros_like(sd, dtype=torch.bool) if self.state is None else c.policy.gate(xd, sd, self.state)
        runner = CachedRunner(m.net, c.policy, m.label, self.state, allowed)
        inner = m.inner
        x_in = xd * bcast(input_scale(inner.sampling, sd), xd)  # (B, ...)
        t_in = network_time(inner.sampling, sd, inner.timestep_mode)  # (B,)
        x0 = to_x0(inner.prediction, runner(x_in, t_in), xd, sd, inner.sigma_data)  # (B, ...)
        x0 = torch.where(bcast(sd == 0, xd), xd, x0)
        old = self.state
        fresh = BlockMemory(torch.ones_like(runner.computed) if old is None else old.calls + 1,
                            runner.computed if old is None else old.computed + runner.computed,
                            runner.skipped if old is None else old.skipped + runner.skipped, runner.caches)
        fresh.history = c.policy.history(xd, sd, x0, fresh if self.state is None else self.state)
        self.state = fresh
        return x0.to(x.dtype)
