"""NoiseSource: noise as a function, not a stream (DESIGN.md, "Noise is a function").

Every normal number is a pure function of (seed, particle id, step, slot, element index):
a counter-based hash (the SplitMix64 finaliser, Steele et al. 2014) turned into normals by
Box-Muller. Draws therefore do not depend on how the batch was cut or ordered, on the
device, or on what was drawn before, so re-runs, cache hits and forked search branches are
reproducible. Integer arithmetic wraps in int64 exactly like uint64, so the bits are exact."""
from __future__ import annotations

import math

import torch

INITIAL_STEP = -1  # the step key of initial noise (latent.noise), distinct from every solver step


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


GOLDEN = _signed(0x9E3779B97F4A7C15)
MIX1 = _signed(0xBF58476D1CE4E5B9)
MIX2 = _signed(0x94D049BB133111EB)
PARTICLE_MUL = _signed(0xD1B54A32D192ED03)
STEP_MUL = _signed(0xABC98388FB8FAC03)
SLOT_MUL = _signed(0x8CB92BA72F3D8DD7)


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors: a bijective, well-mixing 64-bit hash."""
    z = (z ^ _shr(z, 30)) * MIX1
    z = (z ^ _shr(z, 27)) * MIX2
    return z ^ _shr(z, 31)


def _uniform53(bits: torch.Tensor) -> torch.Tensor:
    """Top 53 bits -> float64 uniform in (0, 1), never 0 (safe for log)."""
    return (_shr(bits, 11).to(torch.float64) + 0.5) * (1.0 / (1 << 53))


def particle_key(seed: int, particle: torch.Tensor) -> torch.Tensor:
    """The hashed (seed, particle) key (B,) int64 that every draw of a particle starts from."""
    return mix64(torch.full_like(particle, seed) * GOLDEN + particle * PARTICLE_MUL)


def normal_from_keys(base: torch.Tensor, numel: int) -> torch.Tensor:
    """`numel` standard normals (B, numel) float64 per key of base (B,): element counters, Box-Muller."""
    counter = torch.arange(numel, dtype=torch.int64, device=base.device) * 2  # (E,)
    keys = base[:, None] + counter[None, :] * GOLDEN  # (B, E)
    u1 = _uniform53(mix64(keys))
    u2 = _uniform53(mix64(keys + GOLDEN))
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)  # (B, E)


class NoiseSource:
    """Standard normal draws keyed by (seed, particle, step, slot); batch-split invariant."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"NoiseSource(seed={self.seed})"

    def normal(self, particle: torch.Tensor, step: torch.Tensor | int, shape: tuple[int, ...],
               slot: int = 0, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
        """Normals of shape (B, *shape) for particle ids (B,) at step (B,) or a scalar step."""
        device = torch.device(device) if device is not None else particle.device
        particle = particle.to(device=device, dtype=torch.int64)  # (B,)
        step_t = torch.as_tensor(step, dtype=torch.int64, device=device).expand_as(particle)  # (B,)
        base = mix64(particle_key(self.seed, particle) ^ (step_t * STEP_MUL + slot * SLOT_MUL))  # (B,)
        return normal_from_keys(base, math.prod(shape)).to(dtype).reshape(particle.shape[0], *shape)

    def brownian(self, particle: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                 shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """(W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|) (B, *shape) on each particle's
        Brownian path (nodes/core/brownian.py): N(0, I), the same whatever the step refinement."""
        from .brownian import brownian_increment  # brownian.py builds on this module's hash

        return brownian_increment(self.seed, particle, sigma, sigma_next, shape, dtype, device)

    def like(self, x: torch.Tensor, particle: torch.Tensor, step: torch.Tensor | int,
             slot: int = 0) -> torch.Tensor:
        """Normals shaped, typed and placed like `x` (B, ...)."""
        return self.normal(particle, step, tuple(x.shape[1:]), slot, x.dtype, x.device)
