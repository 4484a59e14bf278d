"""Several Denoiser calls in one network call where they share a network: the cond/uncond batching of
diffusers' pipelines (`torch.cat([latents] * 2)` with `torch.cat([negative_embeds, prompt_embeds])`, one
UNet call, `noise_pred.chunk(2)`), for any guidance node that evaluates several Denoisers at one point.

Calls can share one network call when their Denoisers are plain `NetworkDenoiser`s over the same network
object, ModelSampling object, prediction and timestep mode, their inputs have the same trailing shape,
dtype and device, and each bound conditioning value either stacks on dim 0 (a tensor of 1 or B_i rows for a
call of B_i rows; a single row is repeated, as pipelines' `repeat_rows` does) or is one and the same value
in all of them. Every other call (a Labelled model, a guided or otherwise wrapped Denoiser, another
network) is made on its own, as are all calls with `batch=False`.

Why it is exact up to float rounding: a Denoiser treats rows independently (docs/ARCHITECTURE.md: sigma is per
sample so that any batch can be cut), so rows of one call of sum(B_i) rows equal the rows of separate
calls; the network's kernels may round differently at another batch size, hence "to float tolerance".
What it costs: the joint call's activations are those of sum(B_i) rows at once (peak memory), which is
why the guidance nodes expose `batch`."""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, cast

import torch

from ..core.denoiser import Denoiser
from .parametrisation import NetworkDenoiser

Call = tuple[Denoiser, torch.Tensor, torch.Tensor]  # (denoiser, x (B_i, ...), sigma (B_i,))


def evaluate(calls: Sequence[Call], batch: bool = True) -> list[torch.Tensor]:
    """Each call's x0 estimate (B_i, ...), in order; with `batch`, calls that can share a network call do."""
    groups: dict[Hashable, list[int]] = {}
    for i, (denoise, x, sigma) in enumerate(calls):
        key = stack_key(denoise, x, sigma) if batch else None
        groups.setdefault(("alone", i) if key is None else key, []).append(i)
    outs: list[torch.Tensor] = [torch.empty(0)] * len(calls)
    for members in groups.values():
        results = joint_call([calls[i] for i in members]) if len(members) > 1 else [call_alone(calls[members[0]])]
        for i, out in zip(members, results):
            outs[i] = out
    return outs


def call_alone(call: Call) -> torch.Tensor:
    denoise, x, sigma = call
    return denoise(x, sigma)  # (B_i, ...)


def stack_key(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> Hashable | None:
    """What must agree for calls to share one network call, or None when this call cannot share one."""
    if type(denoise) is not NetworkDenoiser:  # a subclass may call its network differently
        return None
    rows = x.shape[0]
    cond: list[Hashable] = []
    for name, value in sorted(denoise.cond.items()):
        if stackable(value):
            if value.shape[0] not in (1, rows):
                return None  # the call on its own raises the located row-count error
            cond.append((name, tuple(value.shape[1:]), value.dtype, value.device))
        else:
            cond.append((name, "shared", same_value_key(value)))
    return (id(denoise.net), id(denoise.sampling), denoise.prediction, denoise.timestep_mode,
            tuple(x.shape[1:]), x.dtype, x.device, sigma.dtype, tuple(cond))


def stackable(value: Any) -> bool:
    """A conditioning value with a batch dimension: it is concatenated on dim 0, not shared."""
    return isinstance(value, torch.Tensor) and value.dim() > 0


def same_value_key(value: Any) -> Hashable:
    """Equal hashable values (labels, None, strings) group together; anything else only with itself."""
    if isinstance(value, torch.Tensor):
        return ("object", id(value))
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    return ("value", type(value).__name__, value)


def joint_call(calls: Sequence[Call]) -> list[torch.Tensor]:
    """The x0 estimates (B_i, ...) of calls whose stack_key agree, from one network call on sum(B_i) rows."""
    nets = [cast(NetworkDenoiser, denoise) for denoise, _, _ in calls]  # stack_key admitted only these
    first, sizes = nets[0], [x.shape[0] for _, x, _ in calls]
    x = torch.cat([x for _, x, _ in calls])  # (sum B_i, ...)
    sigma = torch.cat([sigma for _, _, sigma in calls])  # (sum B_i,)
    cond = {name: torch.cat([rows_of(d.cond[name], n) for d, n in zip(nets, sizes)]) if stackable(value) else value
            for name, value in first.cond.items()}  # stacked: (sum B_i, ...)
    joint = NetworkDenoiser(first.net, first.sampling, first.prediction, first.timestep_mode, cond)
    return list(joint(x, sigma).split(sizes))


def rows_of(value: torch.Tensor, rows: int) -> torch.Tensor:
    """value (1 or rows, ...) as (rows, ...) (stack_key admitted only those two row counts)."""
    return value if value.shape[0] == rows else value.expand(rows, *value.shape[1:])
