"""AWRS (Lipkin et al. 2025) against exact enumeration on table LMs: its draws are the locally constrained
distribution, its Z-hat is unbiased for the local normaliser (recursive and geometric estimators, many and few
valid tokens), dead ends give -inf, an unsatisfiable constraint is a NodeError, evaluations are counted, and
the same seed gives the same texts whatever the batch split; lm.awrs's weights are importance weights for the
global target."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.lm.awrs import Awrs, awrs_draw
from samplegraph.nodes.lm.common import start_rows
from samplegraph.nodes.lm.exact import total_variation
from samplegraph.nodes.lm.potential import CountingPotential, Evaluations
from samplegraph.nodes.lm.prompt import Prompts

from helpers_lm_exact import (NO_BB_ENDS_A, Predicate, Soft, global_target, local_distribution, random_lm,
                              rows_after, trap_lm, weighted_texts)

ESTIMATORS = ["recursive", "geometric", "auto"]
# many valid tokens: only 'c', 'f' and EOS are rejected; few: texts of 'q' and 'x' only (2 of 26 letters)
MANY = Predicate(lambda t: b"c" not in t and b"f" not in t, lambda t: False)
FEW = Predicate(lambda t: set(t) <= set(b"qx"), lambda t: False)


def draw(lm, potential, generated, n, estimator, seed=0, max_accepts=2):
    state = rows_after(lm, generated, n)
    logp = lm.next_logprobs(state)[0][:, 0]  # (n, V)
    ev = Evaluations()
    d = awrs_draw(CountingPotential(potential.bind(lm.vocab), ev), state, torch.arange(n), logp, NoiseSource(seed),
                  estimator, max_accepts)
    return d, ev


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("generated", [(), (0,), (1,), (2, 0)])  # "", "a", "b", "aba"
def test_draws_follow_the_locally_constrained_distribution(estimator, generated):
    lm, n = trap_lm(), 4000
    exact, _ = local_distribution(lm, NO_BB_ENDS_A, generated)  # (V,)
    d, _ = draw(lm, NO_BB_ENDS_A, generated, n, estimator)
    counts = torch.bincount(d.token, minlength=lm.vocab.size).double()  # (V,)
    assert counts[exact == 0].sum() == 0  # never an invalid (or impossible) token
    keep = exact > 0
    if int(keep.sum()) > 1:  # chi-square at N = 4000: p-value above 1e-4
        assert chisquare(counts[keep].numpy(), (n * exact[keep]).numpy()).pvalue > 1e-4


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("case", ["many", "few", "trap"])
def test_z_hat_is_unbiased_for_the_local_normaliser(estimator, case):
    lm, pot, generated = {"many": (random_lm(26, 1), MANY, (0, 1)), "few": (random_lm(26, 2), FEW, (16,)),
                          "trap": (trap_lm(), NO_BB_ENDS_A, (1,))}[case]
    n = 4000
    _, z_exact = local_distribution(lm, pot, generated)
    d, _ = draw(lm, pot, generated, n, estimator, seed=5)
    z = d.log_z.exp()  # (n,)
    se = float(z.std()) / math.sqrt(n)
    assert abs(float(z.mean()) - z_exact) <= 5 * se + 1e-12, (float(z.mean()), z_exact, se)
    assert torch.isfinite(d.log_z).all()
    if estimator != "auto":
        assert bool(d.geometric.all()) == (estimator == "geometric")


def test_geometric_estimator_with_more_accepts_is_unbiased_and_less_variable():
    lm, n = random_lm(26, 2), 2000
    _, z_exact = local_distribution(lm, FEW, (16,))
    z2 = draw(lm, FEW, (16,), n, "geometric", seed=3)[0].log_z.exp()
    z5 = draw(lm, FEW, (16,), n, "geometric", seed=3, max_accepts=5)[0].log_z.exp()
    assert abs(float(z5.mean()) - z_exact) <= 5 * float(z5.std()) / math.sqrt(n)
    assert float(z5.var()) < float(z2.var())


def test_the_token_does_not_depend_on_the_estimator():
    lm = random_lm(26, 1)
    tokens = [draw(lm, MANY, (0,), 500, e, seed=9)[0].token for e in ("recursive", "geometric")]
    assert torch.equal(tokens[0], tokens[1])


@pytest.mark.parametrize("estimator", ["recursive", "geometric"])
def test_a_row_whose_every_token_is_rejected_dies_with_weight_minus_inf(estimator):
    lm = trap_lm()
    dead_end = Predicate(lambda t: t in (b"", b"b") or t.startswith(b"a"), lambda t: t.startswith(b"a"))
    d, ev = draw(lm, dead_end, (1,), 3, estimator)  # after "b" nothing is valid
    assert d.token.tolist() == [-1, -1, -1] and torch.isneginf(d.log_z).all()
    positive = 4  # a, b, ab, EOS have p > 0 after 'b'; BOS has p = 0 and is never tested
    assert d.rejected.tolist() == [positive] * 3 and ev.candidates == 3 * positive
    # through lm.awrs: rows that drew 'b' first end dead (-inf, unfinished, nothing appended after 'b')
    ctx = NodeContext.detached(seed=0)
    gen = Awrs(particles=200, max_new_tokens=5).run(lm, Prompts(("",)), dead_end, ctx)
    dead = torch.isneginf(gen.log_weight)
    assert 0 < int(dead.sum()) < 200
    assert all(gen.texts[i] == "b" and not gen.finished[i] for i in dead.nonzero().flatten().tolist())
    assert ctx.metrics["dead_rows"] >= int(dead.sum())


def test_an_unsatisfiable_constraint_is_a_node_error_not_a_hang():
    lm, ctx = trap_lm(), NodeContext.detached(seed=0)
    nothing = Predicate(lambda t: t == b"", lambda t: False)
    with pytest.raises(NodeError, match="rejects every token at the first step for every row"):
        Awrs(particles=3, max_new_tokens=4).run(lm, Prompts(("",)), nothing, ctx)
    with pytest.raises(NodeError, match="rejects EOS"):
        Awrs(particles=3, max_new_tokens=1).run(lm, Prompts(("",)), NO_BB_ENDS_A, ctx)
    with pytest.raises(NodeError, match="rejects the empty text"):
        Awrs(particles=3, max_new_tokens=4).run(lm, Prompts(("",)), Predicate(lambda t: False, lambda t: False), ctx)


def test_awrs_tests_few_candidates_and_counts_every_one():
    lm, n = random_lm(26, 1), 1000
    d, ev = draw(lm, MANY, (0,), n, "auto")
    assert ev.candidates == int((d.accepted + d.rejected).sum())
    assert ev.calls == int((d.accepted + d.rejected).max())  # one batched call per round
    assert ev.candidates / n < 3.0 < lm.vocab.size  # a mask would cost V = 28 per row


@pytest.mark.parametrize("estimator", ["recursive", "geometric"])
def test_same_seed_same_texts_whatever_the_batch_split(estimator):
    lm, node = trap_lm(), Awrs(particles=12, max_new_tokens=6, estimator=estimator)
    state, group, _ = start_rows(lm, Prompts(("",)), 12, 6)
    whole = node.generate(lm, state, group, 1, NO_BB_ENDS_A, NodeContext.detached(seed=4))
    perm = torch.tensor([7, 2, 11, 0, 5, 9, 1, 3, 10, 4, 8, 6])
    parts = [node.generate(lm, state[perm[i:i + 4]], group[perm[i:i + 4]], 1, NO_BB_ENDS_A,
                           NodeContext.detached(seed=4)) for i in (0, 4, 8)]
    got = {int(perm[i + k]): (p.texts[k], float(p.log_weight[k])) for i, p in zip((0, 4, 8), parts) for k in range(4)}
    assert got == {r: (whole.texts[r], float(whole.log_weight[r])) for r in range(12)}
    other = node.generate(lm, state, group, 1, NO_BB_ENDS_A, NodeContext.detached(seed=5))
    assert other.texts != whole.texts


@pytest.mark.parametrize("potential", ["boolean", "soft"])
def test_lm_awrs_weights_are_importance_weights_for_the_global_target(potential):
    lm, n, t = trap_lm(), 4000, 6
    pot = NO_BB_ENDS_A if potential == "boolean" else Soft()
    target, z = global_target(lm, pot, t)
    ctx = NodeContext.detached(seed=2)
    gen = Awrs(particles=n, max_new_tokens=t).run(lm, Prompts(("",)), pot, ctx)
    w = gen.log_weight.exp()  # (n,)
    assert abs(float(w.mean()) - z) <= 5 * float(w.std()) / math.sqrt(n)
    assert total_variation(weighted_texts(gen.texts, gen.log_weight), target) < 0.06
    assert ctx.metrics["constraint_evaluations"] > 0 and ctx.metrics["tokens_generated"] > n
