"""NoiseSource: noise as a function, not a stream (docs/ARCHITECTURE.md, "The contracts").

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


CHUNK = 1 << 15  # elements hashed at once: the int64 scratch stays in L2, so each pass is cache-speed
UNIT = 1.0 / (1 << 53)  # the spacing of 53-bit uniforms
TWO_PI = 2.0 * math.pi


def _mask(k: int) -> int:
    """The low 64 - k bits: clears the sign bits that torch's arithmetic >> shifts in."""
    return (1 << (64 - k)) - 1


def mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors: a bijective, well-mixing 64-bit hash."""
    return _mix64_(z.clone(), torch.empty_like(z))


def _mix64_(z: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """mix64 in place on z, with tmp (same shape) as scratch: the same bits, no allocations."""
    for k, mul in ((30, MIX1), (27, MIX2), (31, None)):
        torch.bitwise_right_shift(z, k, out=tmp).bitwise_and_(_mask(k))
        z.bitwise_xor_(tmp)
        if mul is not None:
            z.mul_(mul)
    return z


def _uniform53_(bits: torch.Tensor, tmp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Top 53 bits -> float64 uniform in (0, 1), never 0 (safe for log), written to out.
    (L + 0.5) * UNIT in one op as UNIT/2 + UNIT * L: L * UNIT is exact, so both round once, alike."""
    torch.bitwise_right_shift(bits, 11, out=tmp).bitwise_and_(_mask(11))
    return torch.add(out.new_tensor(0.5 * UNIT), tmp, alpha=UNIT, out=out)


def particle_key(seed: int, particle: torch.Tensor) -> torch.Tensor:
    """The hashed (seed, particle) key (B,) int64 that every draw of a particle starts from."""
    key = torch.mul(particle, PARTICLE_MUL).add_(_signed((seed * GOLDEN) % (1 << 64)))  # (B,) wraps like uint64
    return _mix64_(key, torch.empty_like(key))


def normal_from_keys(base: torch.Tensor, numel: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`numel` standard normals (B, numel) per key of base (B,): element e hashes the counters
    2e and 2e + 1 into two uniforms, Box-Muller in float64, then cast to dtype. Computed in blocks
    of about CHUNK elements, in place, for cache locality; elementwise, so blocks change no value."""
    out = torch.empty(base.shape[0], numel, dtype=dtype, device=base.device)  # (B, E)
    counter = torch.arange(numel, dtype=torch.int64, device=base.device) * 2 * GOLDEN  # (E,) wraps like uint64
    on_cpu = base.device.type == "cpu"  # CUDA: one block, its kernels are launch-bound, not cache-bound
    cols = max(1, min(numel, CHUNK)) if on_cpu else max(1, numel)
    rows = max(1, CHUNK // cols) if on_cpu else max(1, base.shape[0])
    scratch = Scratch(min(rows, base.shape[0]) * cols, base.device)
    for r in range(0, base.shape[0], rows):
        for c in range(0, numel, cols):
            block_normals(base[r:r + rows], counter[c:c + cols], out[r:r + rows, c:c + cols], scratch)
    return out


class Scratch:
    """Work buffers of one normal_from_keys call, reused by its blocks: fresh buffers would cost
    a page fault per page per block."""

    def __init__(self, size: int, device: torch.device):
        self.ints = torch.empty(2, size, dtype=torch.int64, device=device)  # (2, N) key, shift scratch
        self.floats = torch.empty(2, size, dtype=torch.float64, device=device)  # (2, N) radius, angle

    def views(self, shape: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """The four buffers as (R, C) tensors."""
        n = shape[0] * shape[1]
        return tuple(buf[:n].view(shape) for buf in (*self.ints, *self.floats))


def block_normals(base: torch.Tensor, counter: torch.Tensor, out: torch.Tensor, scratch: Scratch) -> None:
    """Normals of keys base (R,) at element counters (C,) written into out (R, C)."""
    z, tmp, radius, angle = scratch.views((base.shape[0], counter.shape[0]))  # (R, C) each
    _mix64_(torch.add(base[:, None], counter[None, :], out=z), tmp)  # (R, C) hash of the counter 2e
    _uniform53_(z, tmp, radius).log_().mul_(-2.0).sqrt_()
    _mix64_(torch.add(base[:, None], counter[None, :] + GOLDEN, out=z), tmp)  # (R, C) hash of 2e + 1
    _uniform53_(z, tmp, angle).mul_(TWO_PI).cos_()
    out.copy_(radius.mul_(angle))


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
        key = particle_key(self.seed, particle).bitwise_xor_(step_t * STEP_MUL + _signed(slot * SLOT_MUL % (1 << 64)))  # (B,)
        base = _mix64_(key, torch.empty_like(key))  # (B,)
        return normal_from_keys(base, math.prod(shape), dtype).reshape(particle.shape[0], *shape)

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
