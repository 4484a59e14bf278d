"""Denoiser: `(x: (B, ...), sigma: (B,)) -> x0 estimate (B, ...)` in the space
x = x0 + sigma * eps (Karras et al. 2022). Every model, guided or not, is seen this way."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch


class Denoiser(ABC):
    """The x0 estimate of a noisy batch at per-sample noise levels."""

    @abstractmethod
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> Denoiser:
        """A copy (or self) whose tensors live on `device`; models override this."""
        return self

    def evaluations(self, sigma: torch.Tensor) -> int:
        """Batched model evaluations one call at these sigmas (B,) costs; guidance overrides this
        (CFG inside its interval costs 2), so reported NFE is the true cost."""
        return 1

    @property
    def separate_renoise(self) -> bool:
        """True when `estimates` returns a re-noise estimate that differs from the x0 estimate (CFG++);
        only samplers with `supports_renoise` may then step it."""
        return False

    def estimates(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, x0_renoise), each (B, ...): the estimate a step moves towards and the one whose noise
        (x - x0_renoise) / sigma it re-noises with (Chung et al. 2024); the same tensor by default."""
        x0 = self(x, sigma)  # (B, ...)
        return x0, x0

    def evaluate_many(self, xs: Sequence[torch.Tensor], sigmas: Sequence[torch.Tensor],
                      renoise: bool = False) -> list[tuple[torch.Tensor, ...]]:
        """Independent calls on row blocks xs[i] (b_i, ...) at sigmas[i] (b_i,): (x0,) each, or (x0, x0_renoise)
        with `renoise`. One after the other here; a Denoiser that can run them at once (the Ray backend's
        split over model workers) overrides this, each block still evaluated as one call."""
        return [self.estimates(x, s) if renoise else (self(x, s),) for x, s in zip(xs, sigmas)]

    @property
    def stateful(self) -> bool:
        """True when the Denoiser carries per-particle memory across calls (APG momentum): run_steps then
        keeps it in State.memory and calls `bound(memory)` each step, so it follows the particles."""
        return False

    def memory_init(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The memory (each (B, ...)) of particles x (B, ...) before their first call; () when stateless."""
        return ()

    def memory_metrics(self, memory: tuple[torch.Tensor, ...]) -> dict[str, int]:
        """Counts to report from a batch's final memory (run_steps records them); none by default."""
        return {}

    def bound(self, memory: tuple[torch.Tensor, ...]) -> BoundDenoiser:
        """This Denoiser reading and updating `memory` (rows = the particles of the next calls)."""
        raise NotImplementedError(f"{type(self).__name__} is stateless; only stateful Denoisers bind memory")


class BoundDenoiser(Denoiser):
    """A stateful Denoiser bound to the per-particle memory of one batch; `memory` is its latest value."""

    memory: tuple[torch.Tensor, ...]


class FunctionDenoiser(Denoiser):
    """Wrap a plain function `(x, sigma) -> x0` (e.g. a k-diffusion style model) as a Denoiser."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.fn = fn

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.fn(x, sigma)


class CountingDenoiser(Denoiser):
    """Counts batched model evaluations (NFE) of the wrapped denoiser; used by the loops for accounting."""

    def __init__(self, inner: Denoiser):
        self.inner = inner
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += self.inner.evaluations(sigma)
        return self.inner(x, sigma)

    @property
    def separate_renoise(self) -> bool:
        return self.inner.separate_renoise

    def estimates(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += self.inner.evaluations(sigma)
        return self.inner.estimates(x, sigma)


class Distribution(ABC):
    """A distribution with an exact sampler and log-density: the reference for metrics."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact samples (n, ...) drawn with `generator` (float64, CPU)."""

    @abstractmethod
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density (B,) float64 of clean data x (B, ...) given on any device and dtype."""
