"""NoiseSource's draws fused into one GPU kernel per draw (Triton, Tillet et al. 2019).

The torch path of nodes/core/noise.py runs some 35 elementwise kernels per draw (the row keys,
two SplitMix64 finalisers, Box-Muller), each a launch and a pass over int64 scratch: on CUDA that
is launch- and bandwidth-bound, 10-100x torch.randn. Here one launch computes, per hash, the row
key from the particle id and the step, both finalisers and the normal pair (or the 53-bit
uniform) in registers and writes only the output. The integer arithmetic is the torch path's
exactly (int64 wraps like uint64; >> is arithmetic, so the same masks clear the sign bits);
the floats are the same float32 operations in the same order, so draws differ from the CPU's
only by each device's float32 log, sqrt, cos and sin. Imported only where Triton is installed;
TRITON_INTERPRET=1 runs the same kernels on CPU tensors (the tests check them that way)."""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from . import noise

BLOCK = 1024  # hashes per program

# noise.py's constants as compile-time constants (Triton kernels read only constexpr globals)
_GOLDEN, _MIX1, _MIX2 = tl.constexpr(noise.GOLDEN), tl.constexpr(noise.MIX1), tl.constexpr(noise.MIX2)
_PARTICLE_MUL, _STEP_MUL = tl.constexpr(noise.PARTICLE_MUL), tl.constexpr(noise.STEP_MUL)
_MASK30, _MASK27, _MASK31 = tl.constexpr(noise._mask(30)), tl.constexpr(noise._mask(27)), tl.constexpr(noise._mask(31))
_MASK11, _LOW32 = tl.constexpr(noise._mask(11)), tl.constexpr(noise.LOW32)
_UNIT32, _UNIT53, _ANGLE = tl.constexpr(noise.UNIT32), tl.constexpr(noise.UNIT53), tl.constexpr(noise.ANGLE)


@triton.jit
def _mix64(z):
    """SplitMix64's finaliser on int64 (nodes/core/noise.py: mix64), the masks undoing >>'s sign fill."""
    z = z ^ ((z >> 30) & _MASK30)
    z = z * _MIX1
    z = z ^ ((z >> 27) & _MASK27)
    z = z * _MIX2
    return z ^ ((z >> 31) & _MASK31)


@triton.jit
def _store_pair(z, out_ptr, offs, live):
    """Box-Muller of hashes z into out[2 offs] (r cos) and out[2 offs + 1] (r sin), as noise.py's _box_muller."""
    u = (z & _LOW32).to(tl.float32) * _UNIT32 + 0.5 * _UNIT32  # (k + 1/2) 2^-32: k 2^-32 is exact
    radius = tl.sqrt_rn(tl.log(u) * -2.0)
    angle = (z >> 32).to(tl.float32) * _ANGLE  # the signed high half * 2 pi 2^-32
    kind = out_ptr.dtype.element_ty
    tl.store(out_ptr + 2 * offs, (radius * tl.cos(angle)).to(kind), mask=live)
    tl.store(out_ptr + 2 * offs + 1, (radius * tl.sin(angle)).to(kind), mask=live)


# Values that vary from draw to draw are not specialised on (Triton would compile a kernel per
# "divisible by 16" or "equals 1" pattern of them): a draw compiles once per mode and dtype.
@triton.jit(do_not_specialize=["step_stride", "k_scalar", "offset", "seed_key", "count", "total"])
def _stream_kernel(base_ptr, step_ptr, step_stride, k_scalar, offset, seed_key, out_ptr, count, total,
                   STEP: tl.constexpr, UNIFORM: tl.constexpr, BLOCK: tl.constexpr):
    """Hash c of row b, for the flat index b * count + c < total: z = mix64(mix64(key_b) + (c + 1) *
    GOLDEN) with key_b = base_b (STEP 0), base_b * PARTICLE_MUL ^ k_scalar (STEP 1) or base_b *
    PARTICLE_MUL ^ mix64((step_b * STEP_MUL + offset) ^ seed_key) (STEP 2); then a normal pair or
    a 53-bit uniform (UNIFORM) into out."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # (BLOCK,) flat hash index
    live = offs < total
    row = offs // count
    key = tl.load(base_ptr + row, mask=live, other=0)
    if STEP == 1:
        key = (key * _PARTICLE_MUL) ^ k_scalar
    if STEP == 2:
        step = tl.load(step_ptr + row * step_stride, mask=live, other=0)
        key = (key * _PARTICLE_MUL) ^ _mix64((step * _STEP_MUL + offset) ^ seed_key)
    z = _mix64(_mix64(key) + (offs - row * count + 1) * _GOLDEN)
    if UNIFORM:
        v = ((z >> 11) & _MASK11).to(tl.float64)  # the top 53 bits
        tl.store(out_ptr + offs, (v + 0.5) * _UNIT53, mask=live)
    else:
        _store_pair(z, out_ptr, offs, live)


@triton.jit(do_not_specialize=["total"])
def _inputs_kernel(inputs_ptr, out_ptr, total, BLOCK: tl.constexpr):
    """Normal pairs of mix64(inputs[i]) into out[2 i], out[2 i + 1] (float32 over the same bytes)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = offs < total
    _store_pair(_mix64(tl.load(inputs_ptr + offs, mask=live, other=0)), out_ptr, offs, live)


def stream(keys: noise.RowKeys, out: torch.Tensor, uniform: bool) -> None:
    """Fill out (B, C, 2) normal pairs or (B, C, 1) float64 uniforms from the hash streams of the
    rows `keys` describes (an int step passes its finished key term, computed on the host)."""
    rows, count = out.shape[0], out.shape[1]
    total = rows * count
    if total == 0:
        return
    base = keys.base.contiguous()  # the kernel reads row b at base_ptr + b
    mode, k_scalar, step, stride = 0, 0, base, 0
    if isinstance(keys.step, torch.Tensor):
        mode, step = 2, keys.step.reshape(-1).to(device=base.device, dtype=torch.int64).contiguous()  # (B,) | (1,)
        stride = 1 if step.shape[0] > 1 else 0
    elif keys.step is not None:
        mode, k_scalar = 1, keys.term()
    with on_device(out.device):
        _stream_kernel[(triton.cdiv(total, BLOCK),)](base, step, stride, k_scalar, keys.offset, keys.seed_key, out,
                                                    count, total, STEP=mode, UNIFORM=uniform, BLOCK=BLOCK)


def pairs_from_inputs(inputs: torch.Tensor, cells: torch.Tensor) -> None:
    """cells (N, 2) float32 := the normal pairs of mix64(inputs (N,) int64); inputs may be cells' bytes."""
    total = inputs.shape[0]
    if total:
        with on_device(cells.device):
            _inputs_kernel[(triton.cdiv(total, BLOCK),)](inputs, cells, total, BLOCK=BLOCK)


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """The launch's device made current (Triton launches on the current CUDA device, whatever its
    arguments' device); nothing to do for the interpreter's CPU tensors."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
