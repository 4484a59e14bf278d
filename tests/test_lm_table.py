"""model.table_lm: exact next-token tables, prompt encoding, windows and the enumeration helper."""
from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.lm.exact import enumerate_sequences, text_distribution
from samplegraph.nodes.lm.table_lm import ModelTableLM

MARKOV = dict(tokens=["a", "bc", "é"], start=[1, 1, 1, 1],
              transitions=[[0, 2, 1, 1], [3, 0, 0, 1], [1, 1, 0, 2]])


def test_enumeration_is_exact_and_sums_to_one():
    lm = ModelTableLM(**MARKOV).run()
    seqs = enumerate_sequences(lm, lm.encode(""), 5)
    assert sum(math.exp(v) for v in seqs.values()) == pytest.approx(1.0, abs=1e-12)
    # p("a" "bc" EOS) = 1/4 * 2/4 * 1/4
    assert math.exp(seqs[(0, 1, 3)]) == pytest.approx(1 / 4 * 2 / 4 * 1 / 4)
    texts = text_distribution(lm, seqs)
    assert texts[b"abc"] == pytest.approx(1 / 32)
    assert "é".encode() in texts and all(k.decode() for k in texts if k)


def test_next_logprobs_window_follows_the_last_token_of_each_prefix():
    lm = ModelTableLM(**MARKOV).run()
    state = lm.start([lm.encode("abcé")], torch.arange(1), 4)  # BOS a bc é
    logp, state2 = lm.next_logprobs(state, window=3)
    assert logp.shape == (1, 3, 5) and state2.cached.tolist() == [4]
    expect = torch.log(torch.tensor([[0, 2, 1, 1, 0], [3, 0, 0, 1, 0], [1, 1, 0, 2, 0]], dtype=torch.float64) / 4)
    assert torch.allclose(torch.exp(logp[0]), torch.exp(expect))


def test_bad_tables_and_prompts_are_located_errors():
    with pytest.raises(ValidationError, match="transitions needs 3 rows"):
        ModelTableLM(tokens=["a", "b", "c"], start=[1, 1, 1, 1], transitions=[[1, 1, 1, 1]])
    with pytest.raises(ValidationError, match="start needs 3 weights"):
        ModelTableLM(tokens=["a", "b"], start=[1, 1])
    with pytest.raises(ValidationError, match="distinct"):
        ModelTableLM(tokens=["a", "a"], start=[1, 1, 1])
    lm = ModelTableLM(**MARKOV).run()
    with pytest.raises(NodeError, match="cannot be cut"):
        lm.encode("ax")
    with pytest.raises(NodeError, match="exceeds the model's context"):
        lm.start([lm.encode("a" * 70)], torch.arange(1), 1)
