"""lm.speculative: the output distribution equals the target LM's exactly (enumerated on model.table_lm),
whatever the draft; a draft equal to the target is always accepted; rows draw the same tokens whatever
the batch split; the LM window contract is respected; on a transformers model the KV caches are cut back."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from scipy.stats import chisquare

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.lm.common import TokenBudget
from samplegraph.nodes.lm.exact import enumerate_sequences
from samplegraph.nodes.lm.prompt import Prompts
from samplegraph.nodes.lm.speculative import Counts, Speculative, speculate
from samplegraph.nodes.lm.table_lm import ModelTableLM

TOKENS = ["a", "b", "ab", "\u00e9"]  # ids 0..3, EOS 4, BOS 5
# target: a Markov chain with a strong dependence on the last token
TARGET = ModelTableLM(tokens=TOKENS, start=[0.4, 0.2, 0.2, 0.1, 0.1],
                      transitions=[[0.1, 0.5, 0.1, 0.1, 0.2], [0.6, 0.0, 0.2, 0.1, 0.1],
                                   [0.2, 0.2, 0.2, 0.2, 0.2], [0.0, 0.3, 0.0, 0.3, 0.4]]).run()
# draft: wrong everywhere; gives 0 to some tokens the target allows (the residual must supply them)
# and mass to tokens the target forbids (always rejected)
DRAFT = ModelTableLM(tokens=TOKENS, start=[0.1, 0.5, 0.0, 0.3, 0.1],
                     transitions=[[0.3, 0.0, 0.3, 0.3, 0.1], [0.2, 0.4, 0.2, 0.0, 0.2],
                                  [0.7, 0.1, 0.0, 0.1, 0.1], [0.3, 0.3, 0.2, 0.0, 0.2]]).run()
MAX_NEW = 4


def run_node(target, draft, n: int, k: int, seed: int = 0, max_new: int = MAX_NEW):
    ctx = NodeContext.detached(seed=seed)
    out = Speculative(k=k, max_new_tokens=max_new, particles=n).run(target, draft, Prompts(("ab",)), ctx)
    return out, ctx.metrics


@pytest.mark.parametrize("k", [1, 3, 6])
def test_speculative_output_follows_the_target_exactly(k):
    """Chi-square over every generated id sequence (EOS-ended or cut at MAX_NEW tokens), 6,000 draws."""
    n = 6000
    exact = enumerate_sequences(TARGET, TARGET.encode("ab"), MAX_NEW)
    out, metrics = run_node(TARGET, DRAFT, n, k)  # table models check the window contract
    seen = Counter(out.token_ids)
    assert set(seen) <= set(exact)  # nothing the target forbids
    keys = [s for s in exact if math.exp(exact[s]) * n >= 5] + ["rest"]
    obs = [seen[s] for s in keys[:-1]] + [n - sum(seen[s] for s in keys[:-1])]
    exp = [math.exp(exact[s]) * n for s in keys[:-1]]
    exp.append(n - sum(exp))
    assert chisquare(obs, exp).pvalue > 1e-3
    assert 0 < metrics["acceptance_rate"] < 1 and metrics["target_calls"] < metrics["tokens_generated"]
    # the same test rejects the draft's own distribution: it has the power to see a wrong sampler
    wrong = enumerate_sequences(DRAFT, DRAFT.encode("ab"), MAX_NEW)
    exp_wrong = [math.exp(wrong.get(s, -math.inf)) * n + 1e-9 for s in keys[:-1]]
    exp_wrong.append(n - sum(exp_wrong))
    assert chisquare(obs, exp_wrong).pvalue < 1e-10


def test_a_draft_equal_to_the_target_is_always_accepted():
    out, metrics = run_node(TARGET, TARGET, 200, 3)
    assert metrics["acceptance_rate"] == 1.0
    assert metrics["draft_tokens_proposed"] > 0 and len(out) == 200


def test_rows_draw_the_same_tokens_whatever_the_batch_split():
    ctx = NodeContext.detached(seed=3)
    full, _ = run_node(TARGET, DRAFT, 12, 3, seed=3, max_new=8)
    state = TARGET.start([TARGET.encode("ab")] * 12, torch.arange(12), 8)
    state = state.replace(tokens=torch.nn.functional.pad(state.tokens, (0, 3)))
    rows = torch.tensor([7, 2, 11, 0])
    part = speculate(TARGET, DRAFT, state[rows], 3, 8, NoiseSource(3), TokenBudget(1), Counts(),
                     torch.zeros(4, dtype=torch.long), ctx)
    assert [tuple(part.generated(i)) for i in range(4)] == [full.token_ids[int(r)] for r in rows]


def test_incompatible_vocabularies_and_too_long_requests_are_refused():
    other = ModelTableLM(tokens=["x", "y"], start=[0.5, 0.3, 0.2]).run()
    with pytest.raises(NodeError, match="vocabulary differs"):
        run_node(TARGET, other, 2, 2)
    short = ModelTableLM(tokens=TOKENS, start=[0.4, 0.2, 0.2, 0.1, 0.1], max_length=8).run()
    with pytest.raises(NodeError, match="k=4 drafted tokens exceeds the context of 8"):
        run_node(short, short, 2, 4, max_new=4)


def test_on_a_transformers_model_with_a_truncated_draft(tmp_path):
    """The tiny Llama of test_lm_hf, its first layer as the draft: KV caches of both are cut back every round."""
    pytest.importorskip("transformers", reason="model.hf_lm needs the `lm` extra (transformers)")
    from samplegraph.nodes.lm.hf_lm import HFLM
    from test_lm_hf import save_tiny

    save_tiny(tmp_path)
    target, draft = HFLM(path=str(tmp_path)).run(), HFLM(path=str(tmp_path), layers=1).run()
    ctx = NodeContext.detached(seed=0)
    out = Speculative(k=3, max_new_tokens=10, particles=3).run(target, draft, Prompts(("hello", "the dog")), ctx)
    m = ctx.metrics
    assert len(out) == 6 and all(len(t) <= 10 for t in out.token_ids)
    assert 0 < m["acceptance_rate"] < 1 and m["draft_tokens_accepted"] < m["draft_tokens_proposed"]
    assert m["tokens_generated"] == sum(len(t) for t in out.token_ids)
    same = NodeContext.detached(seed=0)
    Speculative(k=3, max_new_tokens=10, particles=3).run(target, target, Prompts(("hello", "the dog")), same)
    assert same.metrics["acceptance_rate"] > 0.99  # float32 cache vs window passes differ by ~1e-7 at most


def test_table_models_refuse_a_window_beyond_the_cache_contract():
    """A window reaching back past the last cached distribution (or before the first token) is a located bug
    report from the reference models, so a strategy that relies on more fails here, not on a KV cache."""
    state = TARGET.start([TARGET.encode("ab")], torch.arange(1), 4)  # 2 tokens, nothing cached
    TARGET.next_logprobs(state, window=2)  # both prefixes of a fresh row: allowed
    _, state = TARGET.next_logprobs(state)
    state = state.append(torch.tensor([1])).append(torch.tensor([2]))  # 4 tokens, 2 cached
    TARGET.next_logprobs(state, window=3)  # the last cached distribution and the two new ones
    with pytest.raises(NodeError, match=r"window=4\) on row 0 of 4 tokens with 2 cached"):
        TARGET.next_logprobs(state, window=4)
    with pytest.raises(NodeError, match=r"window=3\) on row 0 of 2 tokens"):
        TARGET.next_logprobs(TARGET.start([TARGET.encode("ab")], torch.arange(1), 4), window=3)
