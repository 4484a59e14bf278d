"""A counter-based Brownian tree: each particle's Brownian path W(sigma) as a pure function of
(seed, particle id, sigma), so that SDE solvers see the same path whatever their step count.

Why: a stream of fresh normals per step gives a different trajectory for every schedule; a
Brownian path fixed by the seed makes refining the steps converge to one SDE solution (the
idea of torchsde's BrownianTree behind k-diffusion's BrownianTreeNoiseSampler). Unlike
torchsde's tree, nothing here has state or a cache: every value is recomputed from hashes.

The path. W(SIGMA_LO) = 0 and W(SIGMA_HI) = sqrt(SIGMA_HI - SIGMA_LO) * Z_top. Between them a
fixed dyadic grid of 2^DEPTH intervals, uniform in log sigma (equal relative resolution at
every noise level), is filled in by Brownian-bridge bisection (Levy's construction): the
midpoint m of a grid interval [a, b] gets
W(m) = W(a) + (m - a) / (b - a) * (W(b) - W(a)) + sqrt((m - a)(b - m) / (b - a)) * Z_m.
Each grid point is the midpoint of exactly one interval, so Z_m is keyed by its integer grid
position (which encodes level and index) and drawn with NoiseSource's hash
(nodes/core/noise.py) from the particle's tree stream: pair p of Z_m is the Box-Muller pair of
mix64(key + m * NODE_MUL + (p + 1) * GOLDEN), the key tagged apart from per-step draws.
Unrolled, the bisection is Levy's series over the DEPTH + 1 grid points on a query's path
from the top, W(t) = sum_l c_l(t) Z_l, with c_l = std_l * tent_l(t): the tent
rises linearly in sigma from 0 at the ends of the interval m_l bisects to 1 at m_l. Truncated
at DEPTH, W is linear inside each leaf. An increment W(t1) - W(t0) draws each shared node
(the top levels of both paths) once, with coefficient c_l(t1) - c_l(t0).

Accuracy. At grid points W is exactly Brownian (Cov(W(s), W(t)) = min(s, t) - SIGMA_LO).
Inside a leaf (relative width 27.6 / 2^20 = 2.6e-5) it is linear, which removes at most a
quarter leaf of variance at each end of a step: a step of relative length r keeps at least
1 - 1.3e-5 / r of its variance (99% at r = 1e-3, far below practical schedules' steps).
Sigma below SIGMA_LO reads as SIGMA_LO (W = 0: a step to sigma = 0 is a step to SIGMA_LO);
sigma above SIGMA_HI is an error. W is summed in float64 (the normals are float32 values); a
query costs at most DEPTH + 1 normal pairs per two elements, an increment at most twice that."""
from __future__ import annotations

import math

import torch

from ...graph.errors import NodeError
from .noise import GOLDEN, _signed, mix64, pairs_from_inputs_, particle_key

SIGMA_LO, SIGMA_HI = 1e-6, 1e6  # the path's domain; every practical noise level is inside
DEPTH = 20  # 2^20 leaves over log(SIGMA_HI / SIGMA_LO) = 27.6: relative leaf width 2.6e-5
LOG_LO = math.log(SIGMA_LO)
LEAF = (math.log(SIGMA_HI) - LOG_LO) / 2 ** DEPTH  # log-width of one leaf
TOP = 1 << DEPTH  # grid positions run 0..TOP
NODE_MUL = _signed(0xC2B2AE3D27D4EB4F)
TREE_TAG = _signed(0x165667B19E3779F9)  # keeps tree keys apart from NoiseSource's step keys
CHUNK = 1 << 20  # tree normals held at once (4 MiB of float32): bounds the memory of wide draws


def grid_sigma(pos: torch.Tensor) -> torch.Tensor:
    """The sigma (float64) of integer grid positions 0..TOP: a pure function of the position."""
    return torch.exp(LOG_LO + pos.to(torch.float64) * LEAF)


T_LO, T_HI = float(grid_sigma(torch.tensor(0))), float(grid_sigma(torch.tensor(TOP)))  # the domain on the grid


def tree_key(seed: int, particle: torch.Tensor) -> torch.Tensor:
    """The key (B,) of each particle's tree stream, apart from its per-step draws by TREE_TAG."""
    return mix64(particle_key(seed, particle) ^ TREE_TAG)


def brownian_path(seed: int, particle: torch.Tensor, sigma: torch.Tensor, numel: int) -> torch.Tensor:
    """W(sigma) (B, numel) float64 of particles (B,) at their own times sigma (B,)."""
    particle = particle.to(torch.int64)  # (B,)
    t = check_times(sigma.to(device=particle.device, dtype=torch.float64))  # (B,)
    times, row = torch.unique(t, return_inverse=True)  # (U,) distinct times, (B,)
    return draw_sum(tree_key(seed, particle), *path_terms(times), row, numel)


def brownian_increment(seed: int, particle: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                       shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """(W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|) (B, *shape): N(0, I) per step, and
    the unnormalised increments of consecutive steps add up (k-diffusion's BrownianTreeNoiseSampler)."""
    device = torch.device(device) if device is not None else particle.device
    particle = particle.to(device=device, dtype=torch.int64)  # (B,)
    b = particle.shape[0]
    t0 = check_times(sigma.to(device=device, dtype=torch.float64).expand(b))  # (B,)
    t1 = check_times(sigma_next.to(device=device, dtype=torch.float64).expand(b))  # (B,)
    (s0, s1), row = distinct_steps(t0, t1)  # (U,) each, (B,)
    terms = increment_terms(s0, s1)  # (U, K) each
    w = draw_sum(tree_key(seed, particle), *terms, row, math.prod(shape))  # (B, E)
    dt = (t1 - t0).abs()[:, None]  # (B, 1)
    z = torch.where(dt > 0, w / dt.sqrt().clamp(min=1e-300), 0.0)  # (B, E)
    return z.to(dtype).reshape(b, *shape)


def distinct_steps(t0: torch.Tensor, t1: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The distinct steps (t0, t1) (U,) of per-particle steps (B,) and each particle's row (B,)
    (1-D uniques: torch.unique over rows is orders of magnitude slower; lockstep: no sort)."""
    if bool((t0 == t0[:1]).all() & (t1 == t1[:1]).all()):
        return (t0[:1], t1[:1]), torch.zeros_like(t0, dtype=torch.int64)
    u0, r0 = torch.unique(t0, return_inverse=True)  # (U0,), (B,)
    u1, r1 = torch.unique(t1, return_inverse=True)  # (U1,), (B,)
    ids, row = torch.unique(r0 * u1.shape[0] + r1, return_inverse=True)  # (U,), (B,)
    return (u0[ids // u1.shape[0]], u1[ids % u1.shape[0]]), row


def increment_terms(t0: torch.Tensor, t1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid positions and coefficients (U, K) of W(t1) - W(t0) for steps t0 -> t1 (U,): the nodes
    on both paths (the top levels) once, with c1 - c0. Columns: t0's path, then t1's nodes at the
    levels where some step's paths part (coefficient 0 on the steps that share that node)."""
    (pos0, pos1), (c0, c1) = (part.chunk(2) for part in path_terms(torch.cat([t0, t1])))  # (U, L+1) each
    shared = pos0 == pos1  # (U, L+1)
    apart = ~shared.all(0)  # (L+1,)
    pos = torch.cat([pos0, pos1[:, apart]], dim=1)  # (U, K)
    coef = torch.cat([torch.where(shared, c1 - c0, -c0), torch.where(shared, 0.0, c1)[:, apart]], dim=1)  # (U, K)
    return pos, coef


def path_terms(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid positions (B, L+1) int64 of the nodes on each query's path (the top first) and
    their Levy-series coefficients (B, L+1) at times t (B,), so that W(t) = sum_l coef_l Z_l."""
    leaf = ((t.log() - LOG_LO) / LEAF).floor().clamp(0, TOP - 1).to(torch.int64)  # (B,) leaf index
    shift = DEPTH - 1 - torch.arange(DEPTH, device=t.device)  # (L,) level l halves intervals of 2^(shift+1)
    a = (leaf[:, None] >> (shift + 1)) << (shift + 1)  # (B, L) left end of the interval bisected at level l
    m, b = a + (1 << shift), a + (2 << shift)  # (B, L) its midpoint and right end
    s_a, s_m, s_b = grid_sigma(a), grid_sigma(m), grid_sigma(b)  # (B, L)
    std = ((s_m - s_a) * (s_b - s_m) / (s_b - s_a)).sqrt()  # (B, L) the bridge std at m
    tq = t[:, None]  # (B, 1)
    tent = torch.where(tq < s_m, (tq - s_a) / (s_m - s_a), (s_b - tq) / (s_b - s_m)).clamp(0.0, 1.0)  # (B, L)
    top = math.sqrt(T_HI - T_LO) * ((t - T_LO) / (T_HI - T_LO))[:, None]  # (B, 1)
    pos = torch.cat([torch.full_like(leaf[:, None], TOP), m], dim=1)  # (B, L+1)
    return pos, torch.cat([top, std * tent], dim=1)


def draw_sum(key: torch.Tensor, pos: torch.Tensor, coef: torch.Tensor, row: torch.Tensor, numel: int) -> torch.Tensor:
    """sum_k coef_k * Z(pos_k) (B, numel) on the paths of tree keys (B,): grid positions and
    coefficients (U, K) per distinct time, row (B,) the one of each particle (particles in
    lockstep share one: nothing is gathered). Pair p of Z(pos) is the Box-Muller pair of
    mix64(key + pos * NODE_MUL + (p + 1) * GOLDEN). A few nodes at a time to bound memory, added node
    by node in order, so that the rounding does not depend on the batch."""
    b, pairs = key.shape[0], (numel + 1) // 2  # whole normal pairs: an odd numel's last sine is dropped
    node, coef = (pos * NODE_MUL).T, coef.T  # (K, U) each
    if pos.shape[0] > 1:
        node, coef = node[:, row], coef[:, row]  # (K, B)
    start = key[:, None] + torch.arange(1, pairs + 1, device=key.device) * GOLDEN  # (B, P) wraps like uint64
    w = coef.new_zeros(b, 2 * pairs)  # (B, 2P) float64
    term = torch.empty_like(w)
    cols = max(1, CHUNK // max(1, b * 2 * pairs))
    for first in range(0, node.shape[0], cols):
        nodes = node[first:first + cols]  # (C, 1 | B)
        cells = torch.empty(nodes.shape[0], b, pairs, 2, dtype=torch.float32, device=key.device)  # (C, B, P, 2)
        torch.add(nodes[:, :, None], start[None], out=cells.view(torch.int64)[..., 0])  # (C, B, P) hash inputs
        z = pairs_from_inputs_(cells).view(nodes.shape[0], b, 2 * pairs)  # (C, B, 2P) normals
        for k in range(nodes.shape[0]):
            w.add_(torch.mul(z[k], coef[first + k, :, None], out=term))  # float64 coef_k Z_k
    return w[:, :numel]


def check_times(t: torch.Tensor) -> torch.Tensor:
    """Clamp times below the domain to SIGMA_LO; reject NaN and times above SIGMA_HI."""
    if bool(torch.isnan(t).any()) or bool((t > T_HI).any()):
        raise NodeError(f"Brownian-tree noise is defined for sigma in [0, {SIGMA_HI:g}], got max sigma "
                        f"{float(t.max())}; use noise='step' for schedules above that")
    return t.clamp(min=T_LO)
