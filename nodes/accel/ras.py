"""model.ras: region-adaptive sampling for a diffusion transformer (Liu et al. 2025, "Region-Adaptive
Sampling for Diffusion Transformers"; authors' code microsoft/RAS).

Per model call, only the tokens in focus go through the transformer; the others keep the noise
prediction they had when last computed. The method, as the authors' scheduler and manager do it:
- score per token: the magnitude of the current noise prediction eps = (x - x0) / sigma over the
  token's patch (their `l2norm` metric: the norm over channels, averaged over the patch pixels), times
  exp(starvation_scale * drops), drops = how many calls the token has been left out so far (their
  anti-starvation term); the ceil(ratio * N) highest-scoring tokens of each particle are recomputed;
- inside every block the recomputed tokens attend to all N tokens: the others' keys and values come
  from a per-block cache refreshed whenever a token is computed (their attention KV cache);
- cached tokens' x0 is x - sigma * eps_cached (the cached noise prediction applied to the current x,
  as their scheduler reuses the cached model output in the step);
- calls 0..dense_calls-1 (their scheduler_start_step) and the calls in `dense_at` (their
  error_reset_steps) compute every token and refresh all caches.
Departures: the authors rank by the std over latent channels by default; MNIST has one channel, so
the l2norm metric (their other option) is used. Selection is per particle (their batch is one image);
calls are counted per model evaluation (their scheduler is Euler: one per step). Their drop counter
starts at -len(sigmas), a constant factor on every score that does not change the ranking; here 0.

State: per-particle memory in State.memory (a stateful Denoiser, docs/ARCHITECTURE.md): calls (B,),
drops (B, N), eps (B, H, W), then keys and values (B, heads, N, D/heads) per block. Ratio 1 computes
every token at every call with the plain network's arithmetic, so it is bit-identical to the model.
`TokenStats` counts token-blocks computed against the dense count (accounting only)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.denoiser import BoundDenoiser
from ..core.model import Model
from ..core.state import bcast
from ..models.networks.conditional import ConditionalNetwork
from ..models.networks.dit import DiT
from ..models.parametrisation import input_scale, network_time, to_x0
from .block_cache import StatefulNetworkModel


@dataclass
class TokenStats:
    """Token-blocks (rows x tokens x blocks) computed and the dense count, over every call so far."""

    computed: int = 0
    dense: int = 0

    @property
    def fraction(self) -> float:
        """Computed / dense (1.0 before any call)."""
        return self.computed / self.dense if self.dense else 1.0


@dataclass
class RASMemory:
    """One batch's RAS caches (see the module docstring)."""

    calls: torch.Tensor  # (B,) int64 model calls so far
    drops: torch.Tensor  # (B, N) float: calls each token was left out
    eps: torch.Tensor  # (B, H, W) the latest noise prediction of every pixel
    keys: list[torch.Tensor]  # per block (B, heads, N, D / heads)
    values: list[torch.Tensor]

    def pack(self) -> tuple[torch.Tensor, ...]:
        return (self.calls, self.drops, self.eps, *self.keys, *self.values)

    @staticmethod
    def unpack(memory: tuple[torch.Tensor, ...], depth: int) -> RASMemory:
        return RASMemory(memory[0], memory[1], memory[2], list(memory[3:3 + depth]),
                         list(memory[3 + depth:3 + 2 * depth]))


def token_scores(net: DiT, eps: torch.Tensor, drops: torch.Tensor, starvation: float) -> torch.Tensor:
    """(B, N) RAS scores: mean |eps| over each token's patch of eps (B, H, W), times exp(starvation * drops)."""
    b, p = eps.shape[0], net.config.patch
    gh, gw = net.token_grid(eps)
    patches = eps.reshape(b, gh, p, gw, p).permute(0, 1, 3, 2, 4).reshape(b, gh * gw, p * p)  # (B, N, p*p)
    return patches.abs().mean(2) * torch.exp(starvation * drops)  # (B, N)


def focus(scores: torch.Tensor, count: int) -> torch.Tensor:
    """(B, count) indices, ascending, of each row's `count` highest scores (B, N)."""
    return scores.topk(count, dim=1).indices.sort(dim=1).values


class RASRunner:
    """The network function `(x_in, t_in) -> F` of one call: all tokens, or the focused ones over the caches."""

    def __init__(self, net: DiT, label: int | None, index: torch.Tensor | None, memory: RASMemory | None):
        self.net, self.label, self.index, self.memory = net, label, index, memory
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def __call__(self, x_in: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        h, e = self.net.embed(x_in, t_in, self.label)  # (B, N, D), (B, D)
        if self.index is None:
            for block in self.net.blocks:
                mod = block.modulation(e)
                q, k, v = block.keys_values(h, mod)  # (B, heads, N, D / heads)
                h = block.finish(h, q, k, v, mod)  # (B, N, D): DiTBlock.forward's arithmetic
                self.keys.append(k)
                self.values.append(v)
            return self.net.head(h, e, x_in)  # (B, H, W)
        at = self.index[..., None].expand(-1, -1, h.shape[2])  # (B, n, D)
        h = h.gather(1, at)  # (B, n, D)
        for i, block in enumerate(self.net.blocks):
            h, k, v = block.partial(h, e, self.index, self.memory.keys[i], self.memory.values[i])
            self.keys.append(k)
            self.values.append(v)
        patches = self.net.head_tokens(h, e)  # (B, n, p*p)
        b, n_all = x_in.shape[0], self.memory.drops.shape[1]
        full = patches.new_zeros(b, n_all, patches.shape[2]).scatter(
            1, self.index[..., None].expand_as(patches), patches)  # (B, N, p*p); others replaced below
        return self.net.unpatchify(full, *self.net.token_grid(x_in)).reshape(x_in.shape)  # (B, H, W)


class RegionAdaptive(StatefulNetworkModel):
    """A class-conditional DiT whose calls recompute only the tokens in focus (RAS); stateful."""

    def __init__(self, model: ConditionalNetwork, ratio: float, dense_calls: int, dense_at: frozenset[int],
                 starvation: float, stats: TokenStats | None = None):
        self.model, self.ratio, self.dense_calls, self.dense_at = model, ratio, dense_calls, dense_at
        self.starvation = starvation
        self.stats = TokenStats() if stats is None else stats

    def __repr__(self) -> str:
        return f"RegionAdaptive({self.model!r}, ratio={self.ratio})"

    def to(self, device: torch.device) -> RegionAdaptive:
        return RegionAdaptive(self.model.to(device), self.ratio, self.dense_calls, self.dense_at, self.starvation,
                              self.stats)

    def bound(self, memory: tuple[torch.Tensor, ...]) -> RegionAdaptiveBound:
        depth = len(self.model.net.blocks)
        return RegionAdaptiveBound(self, RASMemory.unpack(memory, depth) if memory else None)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NodeError("model.ras keeps per-particle token caches that only the 'sample' node carries between "
                        "steps; connect it directly to 'sample' (guidance nodes and search strategies call it "
                        "without its caches)")

    def dense(self, memory: RASMemory | None) -> bool:
        """True when this call computes every token: ratio 1, the first calls, the reset calls."""
        if memory is None or self.ratio >= 1.0:
            return True
        calls = int(memory.calls[0])
        return calls < self.dense_calls or calls in self.dense_at


class RegionAdaptiveBound(BoundDenoiser):
    """RegionAdaptive bound to one batch's RASMemory (None before the first call)."""

    def __init__(self, ras: RegionAdaptive, memory: RASMemory | None):
        self.ras, self.state = ras, memory

    @property
    def memory(self) -> tuple[torch.Tensor, ...]:
        return () if self.state is None else self.state.pack()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 (B, H, W) of x at sigma (B,): focused tokens from the network, the others from cached eps."""
        r, m, old = self.ras, self.ras.model, self.state
        if old is not None and (x.shape[0] != old.calls.shape[0] or x.shape[1:] != old.eps.shape[1:]):
            raise NodeError(f"model.ras: the sampler evaluated a batch of shape {tuple(x.shape)} against caches "
                            f"of {tuple(old.eps.shape)}; use a sampler that evaluates the whole batch each call "
                            f"(not sampler.restart)")
        net = m.net
        dtype = next(net.parameters()).dtype
        xd, sd = x.to(dtype), sigma.to(dtype)  # (B, H, W), (B,)
        tokens = math.prod(net.token_grid(xd))
        index = None
        if not r.dense(old):
            index = focus(token_scores(net, old.eps, old.drops, r.starvation), math.ceil(r.ratio * tokens))
        runner = RASRunner(net, m.label, index, old)
        inner = m.inner
        x_in = xd * bcast(input_scale(inner.sampling, sd), xd)  # (B, H, W)
        t_in = network_time(inner.sampling, sd, inner.timestep_mode)  # (B,)
        x0 = to_x0(inner.prediction, runner(x_in, t_in), xd, sd, inner.sigma_data)  # (B, H, W)
        self.state = self.remember(xd, sd, x0, index, runner, tokens)
        if index is not None:
            x0 = xd - bcast(sd, xd) * self.state.eps  # (B, H, W): fresh eps on focused pixels, cached elsewhere
        x0 = torch.where(bcast(sd == 0, xd), xd, x0)
        self.ras.stats.dense += x.shape[0] * tokens * len(net.blocks)
        self.ras.stats.computed += x.shape[0] * (tokens if index is None else index.shape[1]) * len(net.blocks)
        return x0.to(x.dtype)

    def remember(self, x: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor, index: torch.Tensor | None,
                 runner: RASRunner, tokens: int) -> RASMemory:
        """The memory after this call: fresh eps where computed (and sigma > 0), drop counts, the block caches."""
        b, old = x.shape[0], self.state
        safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))  # (B,)
        eps = (x - x0) / bcast(safe, x)  # (B, H, W)
        calls = torch.ones(b, dtype=torch.long, device=x.device) if old is None else old.calls + 1
        if index is None:
            drops = torch.zeros(b, tokens, device=x.device, dtype=x.dtype) if old is None else old.drops
        else:
            computed = torch.zeros(b, tokens, dtype=torch.bool, device=x.device).scatter(1, index, True)  # (B, N)
            drops = old.drops + (~computed).to(old.drops.dtype)  # (B, N)
            pixels = self.pixel_mask(computed, x)  # (B, H, W)
            eps = torch.where(pixels, eps, old.eps)
        eps = torch.where(bcast(sigma > 0, x), eps, torch.zeros_like(eps) if old is None else old.eps)
        return RASMemory(calls, drops, eps, runner.keys, runner.values)

    def pixel_mask(self, computed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W) bool: the pixels of the computed tokens computed (B, N)."""
        net = self.ras.model.net
        p = net.config.patch
        cells = computed[..., None].expand(-1, -1, p * p).to(x.dtype)  # (B, N, p*p)
        return net.unpatchify(cells, *net.token_grid(x)).reshape(x.shape) > 0.5


@node("model.ras")
class ModelRAS(Node):
    """Region-adaptive sampling: recompute only the tokens in focus each call (Liu et al. 2025, RAS)."""

    ratio: float = Field(0.5, gt=0.0, le=1.0, description="fraction of tokens recomputed per call (the "
                         "authors' sample_ratio); 1 = every token, exactly the plain model")
    dense_calls: int = Field(2, ge=1, description="first calls that compute every token (the authors' "
                             "scheduler_start_step, 4 of 30 steps)")
    dense_at: list[int] = Field([], description="further calls (0-based) that compute every token and refresh "
                                "the caches (the authors' error_reset_steps, 12 and 22 of 30)")
    starvation_scale: float = Field(0.1, ge=0.0, description="weight of the drop count in the score "
                                    "exp(scale * drops) (the authors' default 0.1)")

    def run(self, model: Model) -> RegionAdaptive:
        """The stateful RAS model over a DiT network model (NodeError for other models)."""
        if not isinstance(model, ConditionalNetwork) or not isinstance(model.net, DiT):
            raise NodeError(f"model.ras needs a diffusion transformer (model.mnist_dit, optionally through "
                            f"model.condition): it selects patch tokens; got {type(model).__name__}"
                            f"{' over ' + type(model.net).__name__ if isinstance(model, ConditionalNetwork) else ''}")
        return RegionAdaptive(model, self.ratio, self.dense_calls, frozenset(self.dense_at), self.starvation_scale)
