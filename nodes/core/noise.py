"""NoiseSource: noise as a function, not a stream (docs/ARCHITECTURE.md, "The contracts").

Every draw is a pure function of (seed, particle id, step, slot, element index): a
counter-based hash (the SplitMix64 finaliser, Steele et al. 2014) of a per-row key plus the
element's counter. Draws therefore do not depend on how the batch was cut or ordered, on the
chunking, or on what was drawn before, so re-runs, cache hits and forked search branches are
reproducible. Integer arithmetic wraps in int64 exactly like uint64, so the bits are exact.

Normals: one 64-bit hash per PAIR of normals (elements 2p and 2p + 1 of a row: pair p hashes
the row's SplitMix64 stream at p). Its low 32 bits give the radius uniform u = (k + 1/2) / 2^32,
never 0 or 1, its high 32 bits the angle theta in [-pi, pi); Box-Muller
(Box & Muller 1958) gives r cos(theta) to element 2p and r sin(theta) to 2p + 1, with
r = sqrt(-2 log u), in float32 (relative error ~1e-7) and then cast to the dtype asked for
(so float64 draws equal float32 draws exactly). Tails: r <= sqrt(66 log 2) = 6.76, i.e. the
radius is truncated with probability P(R > 6.76) = 2^-33 = 1.2e-10 per pair; |z| > 6.76 never
occurs (true probability 1.3e-11 per normal). Across devices the draws agree up to the last-ulp
differences of each device's float32 log, sin and cos."""
from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Callable
from functools import lru_cache
from types import ModuleType

import torch

INITIAL_STEP = -1  # the step key of initial noise (latent.noise), distinct from every solver step


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _wrap(c: int) -> int:
    """Any Python int as the int64 with the same low 64 bits (uint64 arithmetic)."""
    return _signed(c % (1 << 64))


GOLDEN = _signed(0x9E3779B97F4A7C15)
MIX1 = _signed(0xBF58476D1CE4E5B9)
MIX2 = _signed(0x94D049BB133111EB)
PARTICLE_MUL = _signed(0xD1B54A32D192ED03)
STEP_MUL = _signed(0xABC98388FB8FAC03)
SLOT_MUL = _signed(0x8CB92BA72F3D8DD7)
UNIFORM_TAG = _signed(0xE7037ED1A0B428DB)  # keeps uniform() keys apart from normal() keys

CHUNK = 1 << 15  # hashes per block: the scratch (28 bytes per hash) stays in L2, each pass is cache-speed
LOW32 = 0xFFFFFFFF
UNIT32 = 2.0 ** -32  # the spacing of 32-bit uniforms
UNIT53 = 2.0 ** -53  # the spacing of 53-bit uniforms
ANGLE = 2.0 * math.pi * UNIT32  # radians per step of a signed 32-bit angle


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


def particle_key(seed: int, particle: torch.Tensor) -> torch.Tensor:
    """The hashed (seed, particle) key (B,) int64 that every draw of a particle starts from."""
    key = torch.mul(particle, PARTICLE_MUL).add_(_wrap(seed * GOLDEN))  # (B,) wraps like uint64
    return _mix64_(key, torch.empty_like(key))


class Scratch:
    """Work buffers of one draw, reused by its blocks (fresh buffers would cost a page fault per
    page per block): the block's row keys, an int64 buffer and `floats` float32 buffers per hash,
    and the hashes themselves unless they fit in the block's own output."""

    def __init__(self, rows: int, size: int, device: torch.device, floats: int, own_hashes: bool):
        self.rows = torch.empty(rows, dtype=torch.int64, device=device)  # (R,) row keys
        self.ints = torch.empty(1 + own_hashes, size, dtype=torch.int64, device=device)  # (1|2, N)
        self.floats = torch.empty(floats, size, dtype=torch.float32, device=device)  # (F, N)

    def views(self, shape: tuple[int, int], out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """z, tmp and the float buffers as (R, C) tensors; z in out's bytes when it has room."""
        n = shape[0] * shape[1]
        tmp, *z = (buf[:n].view(shape) for buf in self.ints)
        z = z[0] if z else out.view(-1).view(torch.int64)[:n].view(shape)  # out is contiguous per block
        return (z, tmp, *(buf[:n].view(shape) for buf in self.floats))


def mix64_int(z: int) -> int:
    """mix64 of one Python int's low 64 bits, on the host (no device kernels): the same bits."""
    z %= 1 << 64
    for k, mul in ((30, MIX1), (27, MIX2)):
        z = ((z ^ (z >> k)) * mul) % (1 << 64)
    return _signed(z ^ (z >> 31))


class RowKeys:
    """The unhashed keys (B,) of a draw's rows (hash_blocks hashes them): `base` itself (step
    None: given keys), or base * PARTICLE_MUL ^ K with K = mix64((step * STEP_MUL + offset) ^
    seed_key) for particle ids `base` (NoiseSource.row_keys). A recipe, not a tensor, so that the
    fused kernel (noise_kernel.py) can compute the keys in its own registers."""

    def __init__(self, base: torch.Tensor, step: torch.Tensor | int | None = None, offset: int = 0,
                 seed_key: int = 0):
        if step is not None and not isinstance(step, torch.Tensor):
            step = int(step)  # a NumPy or other integer scalar: a host int
        self.base, self.step, self.offset, self.seed_key = base, step, offset, seed_key  # base (B,) int64

    def term(self) -> int | torch.Tensor:
        """K: an int for an int step (computed on the host), else (1,) or (B,) on base's device."""
        if isinstance(self.step, int):
            return mix64_int(_wrap(self.step * STEP_MUL + self.offset) ^ self.seed_key)
        step = torch.as_tensor(self.step, dtype=torch.int64, device=self.base.device).reshape(-1)  # (1,) or (B,)
        return mix64(torch.mul(step, STEP_MUL).add_(self.offset).bitwise_xor_(self.seed_key))

    def writer(self) -> Callable[[int, int, torch.Tensor], object]:
        """write(first row, end row, buf (R,)): the keys of rows first..end-1 into buf."""
        if self.step is None:
            return lambda first, end, buf: buf.copy_(self.base[first:end])
        k = self.term()

        def write(first: int, end: int, buf: torch.Tensor) -> torch.Tensor:
            mixed = k if isinstance(k, int) or k.shape[0] == 1 else k[first:end]
            return torch.mul(self.base[first:end], PARTICLE_MUL, out=buf).bitwise_xor_(mixed)
        return write


Fill = Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor], None]


def hash_blocks(row_keys: RowKeys, count: int, out: torch.Tensor, fill: Fill, floats: int) -> None:
    """For the rows of out (B, count, W) and counters c = 0..count-1, call fill(z, tmp, floats, out
    block) per block of (R, C) hashes, z = mix64(mix64(key) + (c + 1) * GOLDEN): each row a
    SplitMix64 stream from its key (from c + 1, as SplitMix64 does: mix64(0) = 0, so an all-zero
    key would otherwise be a fixed point). Blocks of about CHUNK hashes on CPU (cache locality),
    one block on CUDA (launch-bound); elementwise, so blocks change no value. Row keys are made
    per block (no (B,) temporary); fill may overwrite z, which lives in the block's output bytes
    when they are at least 8 per hash."""
    b, device, write_keys = out.shape[0], out.device, row_keys.writer()
    counter = torch.arange(1, count + 1, dtype=torch.int64, device=device) * GOLDEN  # (C,) from 1: mix64(0) = 0
    on_cpu = device.type == "cpu"
    cols = max(1, min(count, CHUNK)) if on_cpu else max(1, count)
    rows = max(1, min(b, CHUNK // cols if on_cpu else b))  # whole rows, or a part of one row
    scratch = Scratch(rows, rows * cols, device, floats, out.shape[2] * out.element_size() < 8)
    for r in range(0, b, rows):
        base = scratch.rows[:min(rows, b - r)]  # (R,)
        write_keys(r, r + base.shape[0], base)
        _mix64_(base, scratch.ints[0, :base.shape[0]])
        for c in range(0, count, cols):
            block = out[r:r + rows, c:c + cols]  # (R, C, W) contiguous: whole rows, or a part of one row
            z, tmp, *work = scratch.views(block.shape[:2], block)  # (R, C) each
            _mix64_(_add_outer(base, counter[c:c + cols], z), tmp)
            fill(z, tmp, work, block)


def _add_outer(base: torch.Tensor, counter: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out (R, C) = base (R,)[:, None] + counter (C,)[None, :]; a few columns one by one (a
    broadcast over short rows is slow on CPU), the same integers either way."""
    if counter.shape[0] > 8 or base.shape[0] == 1:
        return torch.add(base[:, None], counter[None, :], out=out)
    for c in range(counter.shape[0]):
        torch.add(base, counter[c], out=out[:, c])
    return out


def _box_muller(z: torch.Tensor, tmp: torch.Tensor, work: list[torch.Tensor], out: torch.Tensor) -> None:
    """Hashes z (R, C) -> normal pairs out (R, C, 2): radius from the low 32 bits, angle from the high."""
    radius, angle = work  # (R, C) float32 each
    half = torch.tensor(0.5 * UNIT32, dtype=torch.float32, device=z.device)
    torch.bitwise_and(z, LOW32, out=tmp)  # k in [0, 2^32)
    torch.add(half, tmp, alpha=UNIT32, out=radius)  # u = (k + 1/2) / 2^32 in (0, 1): k * 2^-32 is exact
    radius.log_().mul_(-2.0).sqrt_()
    torch.mul(torch.bitwise_right_shift(z, 32, out=tmp), ANGLE, out=angle)  # the signed high half: [-pi, pi)
    trig = tmp.view(-1).view(torch.float32)[:radius.numel()].view(radius.shape)  # tmp's bytes, free now
    torch.mul(radius, torch.cos(angle, out=trig), out=out[..., 0])  # z is spent: out may overwrite it
    torch.mul(radius, torch.sin(angle, out=trig), out=out[..., 1])


@lru_cache(maxsize=None)
def fused_kernel_works(device: torch.device) -> bool:
    """Whether noise_kernel.py's fused draws run on this CUDA device and agree with hash_blocks'
    (uniforms bit for bit, normals to float32 rounding), probed once per process and device; without
    Triton, or where it cannot build (no C compiler for its launcher, an unsupported GPU), the torch
    path serves, with a warning."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        from . import noise_kernel

        keys, size = RowKeys(torch.arange(67, device=device), 3, 5, 7), (67, 129)  # odd sizes: partial blocks
        agree = True
        for uniform, dtype in ((True, torch.float64), (False, torch.float32)):
            fused, ref = (torch.empty(*size, 1 + (not uniform), dtype=dtype, device=device) for _ in range(2))
            noise_kernel.stream(keys, fused, uniform)
            torch_streams(keys, ref, uniform)
            agree &= bool(torch.equal(fused, ref) if uniform else torch.allclose(fused, ref, rtol=1e-5, atol=1e-5))
        if not agree:
            warnings.warn(f"samplegraph: the fused noise kernel disagrees with the torch path on {device}; "
                          "using the torch path (slower)", RuntimeWarning, stacklevel=2)
        return agree
    except Exception as exc:  # noqa: BLE001 - any failure to build or run the kernel: the torch path serves
        warnings.warn(f"samplegraph: the fused noise kernel does not run on {device} ({type(exc).__name__}: "
                      f"{exc}); using the torch path (slower)", RuntimeWarning, stacklevel=2)
        return False


def fused_kernels(device: torch.device) -> ModuleType | None:
    """noise_kernel.py where its fused kernels serve `device` (CUDA, Triton working), else None."""
    if device.type != "cuda" or not fused_kernel_works(device):
        return None
    from . import noise_kernel

    return noise_kernel


def _uniform53(z: torch.Tensor, tmp: torch.Tensor, work: list[torch.Tensor], out: torch.Tensor) -> None:
    """Hashes z (R, C) -> float64 uniforms out (R, C, 1): (top 53 bits + 1/2) / 2^53, in (0, 1)."""
    torch.bitwise_right_shift(z, 11, out=tmp).bitwise_and_(_mask(11))
    out[..., 0].copy_(tmp).add_(0.5).mul_(UNIT53)  # L + 1/2 < 2^53 is exact in float64, as is * 2^-53


def pairs_from_inputs_(cells: torch.Tensor) -> torch.Tensor:
    """In place: float32 cells (..., 2) whose bytes hold one int64 hash input x each
    (cells.view(torch.int64)) become the normal pairs of mix64(x), as in normal_pairs; in blocks
    of CHUNK on CPU. For callers that lay out their own counters (the Brownian tree)."""
    flat = cells.view(-1, 2)  # (N, 2) float32, contiguous
    n, on_cpu = flat.shape[0], cells.device.type == "cpu"
    if (kernels := fused_kernels(cells.device)) is not None:
        kernels.pairs_from_inputs(flat.view(torch.int64).view(-1), flat)
        return cells
    size = max(1, min(n, CHUNK) if on_cpu else n)
    scratch = Scratch(0, size, cells.device, floats=2, own_hashes=False)
    for first in range(0, n, size):
        block = flat[first:first + size].view(1, -1, 2)  # (1, C, 2)
        z, tmp, *work = scratch.views((1, block.shape[1]), block)  # (1, C) each: z is the inputs
        _box_muller(_mix64_(z, tmp), tmp, work, block)
    return cells


def normal_pairs(row_keys: RowKeys, rows: int, pairs: int, dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """2 * pairs standard normals (B, 2P) per row: pair p of the row's hash stream gives
    elements 2p (r cos) and 2p + 1 (r sin)."""
    out = torch.empty(rows, pairs, 2, dtype=dtype, device=device)  # (B, P, 2)
    _streams(row_keys, out, uniform=False)
    return out.view(rows, 2 * pairs)


def _streams(row_keys: RowKeys, out: torch.Tensor, uniform: bool) -> None:
    """out (B, C, 2) normal pairs or (B, C, 1) float64 uniforms of the rows' hash streams: one
    fused kernel on CUDA where Triton works (noise_kernel.py), else hash_blocks' torch ops."""
    if (kernels := fused_kernels(out.device)) is not None:
        kernels.stream(row_keys, out, uniform)
    else:
        torch_streams(row_keys, out, uniform)


def torch_streams(row_keys: RowKeys, out: torch.Tensor, uniform: bool) -> None:
    """_streams through hash_blocks' torch ops, on any device (the reference of the fused kernel)."""
    hash_blocks(row_keys, out.shape[1], out, _uniform53 if uniform else _box_muller, floats=0 if uniform else 2)


def normal_from_keys(keys: torch.Tensor, numel: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """`numel` standard normals (B, numel) per row key (B,): normal_pairs, the last sine dropped
    when numel is odd."""
    return _odd_cut(normal_pairs(RowKeys(keys), keys.shape[0], (numel + 1) // 2, dtype, keys.device), numel)


def _odd_cut(pairs: torch.Tensor, numel: int) -> torch.Tensor:
    """The first numel columns of normal pairs (B, 2P), contiguous."""
    return pairs if pairs.shape[1] == numel else pairs[:, :numel].contiguous()


def uniform_from_keys(row_keys: RowKeys, rows: int, numel: int, device: torch.device | str) -> torch.Tensor:
    """`numel` float64 uniforms in (0, 1) (B, numel) per row: one hash per element."""
    out = torch.empty(rows, numel, 1, dtype=torch.float64, device=device)  # (B, E, 1)
    _streams(row_keys, out, uniform=True)
    return out.view(rows, numel)


class NoiseSource:
    """Standard normal (and uniform) draws keyed by (seed, particle, step, slot); batch-split invariant."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.seed_key = mix64_int(self.seed * GOLDEN)

    def __repr__(self) -> str:
        return f"NoiseSource(seed={self.seed})"

    def row_keys(self, particle: torch.Tensor, step: torch.Tensor | int, slot: int, tag: int = 0) -> RowKeys:
        """The keys of (particle, step, slot) rows, particle * PARTICLE_MUL ^ K (then hashed by
        hash_blocks) with K = mix64((step * STEP_MUL + slot * SLOT_MUL + tag) ^ mix64(seed * GOLDEN));
        the tag separates kinds of draws (normal, uniform)."""
        return RowKeys(particle, step, _wrap(slot * SLOT_MUL + tag), self.seed_key)

    def normal(self, particle: torch.Tensor, step: torch.Tensor | int, shape: tuple[int, ...],
               slot: int = 0, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
        """Normals of shape (B, *shape) for particle ids (B,) at step (B,) or a scalar step."""
        particle, numel = _ids(particle, device), math.prod(shape)  # (B,)
        z = normal_pairs(self.row_keys(particle, step, slot), particle.shape[0], (numel + 1) // 2, dtype,
                         particle.device)  # (B, 2P)
        return _odd_cut(z, numel).reshape(particle.shape[0], *shape)

    def uniform(self, particle: torch.Tensor, step: torch.Tensor | int, shape: tuple[int, ...],
                slot: int = 0, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> torch.Tensor:
        """Uniforms in (0, 1) of shape (B, *shape), keyed like normal (for tokens, step = the
        token position): 53-bit float64, cast to dtype and kept off 0 and 1 there."""
        particle = _ids(particle, device)  # (B,)
        keys = self.row_keys(particle, step, slot, UNIFORM_TAG)
        u = uniform_from_keys(keys, particle.shape[0], math.prod(shape), particle.device)
        u = u.reshape(particle.shape[0], *shape)
        if dtype == torch.float64:
            return u
        info = torch.finfo(dtype)
        return u.to(dtype).clamp_(info.tiny, 1.0 - info.eps / 2)

    def gumbel(self, particle: torch.Tensor, step: torch.Tensor | int, shape: tuple[int, ...],
               slot: int = 0, dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> torch.Tensor:
        """Standard Gumbel draws -log(-log(u)) (B, *shape) of uniform's u, in float64 then cast
        (Gumbel-max sampling: argmax(logits + g) is a categorical draw)."""
        u = self.uniform(particle, step, shape, slot, torch.float64, device)
        return u.log_().neg_().log_().neg_().to(dtype)

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


def _ids(particle: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """Particle ids (B,) as int64 on the device asked for (default: where they are)."""
    device = torch.device(device) if device is not None else particle.device
    return particle.to(device=device, dtype=torch.int64)
