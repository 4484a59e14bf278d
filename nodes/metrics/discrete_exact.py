"""metrics.discrete_exact: distance of discrete-diffusion samples to model.exact_discrete's exact
distribution over complete sequences, by enumeration, conditioned on the positions the template gave."""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..discrete.denoiser import DiscreteDenoiser
from ..discrete.exact import exact_distribution, expected_tv, kl_divergence, total_variation
from ..discrete.exact_model import ExactDiscrete
from ..discrete.samples import DiscreteSamples


class DiscreteExact(NamedTuple):
    total_variation: float  # 1/2 sum |f(x) - p(x)|, groups pooled by their sample counts
    kl: float  # KL(f || p) = sum f log(f / p); inf when a sample is impossible under the model
    expected_tv: float  # E[TV] of as many exact draws (the floor a correct sampler sits at)


@node("metrics.discrete_exact", version=1)
class MetricDiscreteExact(Node):
    """TV and KL of samples to the exact (conditional) distribution of a Markov-chain model (enumeration)."""

    def run(self, samples: DiscreteSamples, model: DiscreteDenoiser, ctx: NodeContext) -> DiscreteExact:
        exact_model = chain_of_length(model, samples.tokens.shape[1])
        table = [group_distance(samples, exact_model, int(g)) for g in samples.group.unique().tolist()]
        n = sum(row["samples"] for row in table)
        tv, kl, floor = (sum(row[k] * row["samples"] for row in table) / n for k in ("tv", "kl", "expected_tv"))
        ctx.record(total_variation=tv, kl=kl, expected_tv=floor, samples=n, groups=table)
        return DiscreteExact(tv, kl, floor)


def chain_of_length(model: DiscreteDenoiser, length: int) -> ExactDiscrete:
    """The exact model over sequences of `length` (<= its own: the chain's first positions)."""
    if not isinstance(model, ExactDiscrete):
        raise NodeError(f"input 'model' must be model.exact_discrete (an enumerable distribution), got "
                        f"{type(model).__name__}; exact TV needs a model whose distribution can be enumerated")
    if length > model.length:
        raise NodeError(f"input 'samples' has sequences of {length} tokens but the model's length is {model.length}")
    out = copy.copy(model)
    out.length = length
    return out


def group_distance(samples: DiscreteSamples, model: ExactDiscrete, g: int) -> dict[str, float]:
    """TV, KL and the expected TV at the effective sample size of group g's weighted samples."""
    rows = (samples.group == g).nonzero().flatten()  # (N_g,)
    tokens, fixed = samples.tokens[rows], samples.fixed[rows]  # (N_g, L)
    if bool((fixed != fixed[0]).any()) or bool(((tokens != tokens[0]) & fixed[0]).any()):
        raise NodeError(f"input 'samples': group {g} mixes rows with different given positions; each group must "
                        "come from one template text")
    if bool((tokens == model.mask_id).any()):
        raise NodeError(f"input 'samples': group {g} holds masked positions; the sampler did not finish")
    w = torch.softmax(samples.log_weight[rows].to(torch.float64), 0)  # (N_g,)
    freq: dict[tuple[int, ...], float] = {}
    for seq, wi in zip(map(tuple, tokens.tolist()), w.tolist()):
        freq[seq] = freq.get(seq, 0.0) + wi
    exact = exact_distribution(model, tokens[0], fixed[0])
    ess = float(1.0 / (w ** 2).sum())
    return {"group": g, "samples": len(rows), "ess": ess, "tv": total_variation(freq, exact),
            "kl": kl_divergence(freq, exact), "expected_tv": expected_tv(exact, max(1, round(ess)))}
