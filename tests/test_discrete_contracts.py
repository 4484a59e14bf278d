"""Discrete-diffusion contracts: the exact model's posteriors against enumeration, schedules, the
state's indexing, templates and their located errors."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.discrete.denoiser import carry_over
from samplegraph.nodes.discrete.exact import all_sequences, exact_distribution, sequence_logprob, total_variation
from samplegraph.nodes.discrete.exact_model import ModelExactDiscrete
from samplegraph.nodes.discrete.schedules import nodes as schedule_nodes
from samplegraph.nodes.discrete.state import GIVEN, STILL_MASKED, DiscreteState
from samplegraph.nodes.discrete.template import DiscreteInfill, DiscreteTemplate, pieces


def marginals(dist: dict[tuple[int, ...], float], length: int, v: int) -> torch.Tensor:
    out = torch.zeros(length, v, dtype=torch.float64)
    for s, p in dist.items():
        for pos, tok in enumerate(s):
            out[pos, tok] += p
    return out  # (L, V)


def test_masked_posterior_is_the_enumerated_conditional():
    den = ModelExactDiscrete(length=5).run()
    m = den.mask_id
    x = torch.tensor([[0, m, m, 2, m], [m, m, m, m, m], [3, m, 1, m, m]])  # the last row is impossible (EOS then 1)
    post = den(x[:2], torch.rand(2, dtype=torch.float64)).exp()  # (2, L, V): time-agnostic
    for b in range(2):
        exact = exact_distribution(den, x[b], x[b] != m)
        assert torch.allclose(post[b], marginals(exact, 5, den.vocab.size), atol=1e-12)
    assert bool((post[..., m] == 0).all())
    assert sum(exact_distribution(den).values()) == pytest.approx(1.0, abs=1e-12)


def test_uniform_posterior_is_the_enumerated_channel_posterior():
    den = ModelExactDiscrete(length=4, noise="uniform").run()
    assert den.mask_id is None and den.vocab.size == 4
    x = torch.tensor([[0, 1, 1, 3]])
    seqs = all_sequences(den)
    for t in (0.2, 0.7, 0.99):
        alpha = 1.0 - t
        like = (alpha * (seqs == x).double() + (1 - alpha) / 4).prod(-1)  # (N,)
        w = sequence_logprob(den, seqs).exp() * like
        w = w / w.sum()
        exact = marginals({tuple(s): float(p) for s, p in zip(seqs.tolist(), w)}, 4, 4)
        post = den(x, torch.tensor([t], dtype=torch.float64)).exp()[0]
        assert torch.allclose(post, exact, atol=1e-12)


def test_carry_over_puts_a_point_mass_on_unmasked_tokens():
    logits = torch.randn(2, 3, 5, dtype=torch.float64)
    tokens = torch.tensor([[4, 1, 4], [0, 4, 2]])
    logp = carry_over(logits, tokens, mask_id=4)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 3, dtype=torch.float64))
    assert bool((logp[..., 4] == -torch.inf).all())
    assert float(logp[0, 1, 1]) == 0.0 and float(logp[1, 2, 2]) == 0.0
    assert torch.allclose(logp[0, 0, :4], torch.log_softmax(logits[0, 0, :4], -1))


@pytest.mark.parametrize("cls", schedule_nodes())
def test_schedules_run_from_clean_to_masked_and_invert(cls):
    s = cls(steps=8).run()
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = s.alpha(t)
    assert float(a[0]) == pytest.approx(1.0, abs=1e-3) and float(a[-1]) < 1e-3
    assert bool((a[1:] <= a[:-1]).all())
    inner = t[(a > 1e-12) & (a < 1 - 1e-12)]
    assert torch.allclose(s.time_of(s.alpha(inner)), inner, atol=1e-9)
    assert s.times.tolist() == pytest.approx([1 - k / 8 for k in range(9)])
    p = s.unmask_probability(s.times[:-1], s.times[1:])  # (S,)
    assert float(p[-1]) == 1.0 and bool(((p >= 0) & (p <= 1)).all())


def test_state_indexes_puts_and_reveals():
    tokens = torch.tensor([[5, 1, 5], [5, 5, 5], [2, 5, 5]])
    fixed = tokens != 5
    st = DiscreteState.start(tokens, fixed, torch.tensor([10, 11, 12]))
    assert st.revealed.tolist() == [[STILL_MASKED, GIVEN, STILL_MASKED], [STILL_MASKED] * 3,
                                    [GIVEN, STILL_MASKED, STILL_MASKED]]
    sub = st[torch.tensor([True, False, True])]
    assert sub.particle.tolist() == [10, 12]
    new = sub.reveal(torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.long),
                     torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert new.tokens.tolist() == [[0, 1, 0], [2, 0, 0]]  # fixed positions untouched
    back = st.put(torch.tensor([0, 2]), new)
    assert back.tokens.tolist() == [[0, 1, 0], [5, 5, 5], [2, 0, 0]]
    assert back.revealed[0].tolist() == [1, GIVEN, 1] and back.step.tolist() == [1, 0, 1]
    assert DiscreteState.cat([st[0], st[1:]]).tokens.tolist() == tokens.tolist()


def test_infill_template_encodes_holes_and_groups():
    den = ModelExactDiscrete(length=6).run()
    tpl = DiscreteInfill(text=["a__b", "_cc_"]).run()
    state, group, groups = tpl.start(den, 3, NoiseSource(0))
    m = den.mask_id
    assert groups == 2 and group.tolist() == [0, 0, 0, 1, 1, 1]
    assert state.tokens[0].tolist() == [0, m, m, 1] and state.tokens[3].tolist() == [m, 2, 2, m]
    assert state.fixed[3].tolist() == [False, True, True, False]
    assert pieces("ab__c_", "_") == ["ab", 2, "c", 1]


def test_uniform_noise_template_starts_holes_from_uniform_tokens():
    den = ModelExactDiscrete(length=6, noise="uniform").run()
    state, _, _ = DiscreteTemplate(length=6, prompt="ab").run().start(den, 4000, NoiseSource(1))
    assert bool((state.tokens[:, :2] == torch.tensor([0, 1])).all())
    freq = torch.bincount(state.tokens[:, 2:].flatten(), minlength=4).double() / (4000 * 4)
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.02)


def test_template_errors_name_the_problem():
    den = ModelExactDiscrete(length=4).run()
    with pytest.raises(ValidationError, match="no masked position"):
        DiscreteInfill(text=["ab_", "abc"])
    with pytest.raises(ValidationError, match="mask marker"):
        DiscreteTemplate(length=8, prompt="a_b")
    with pytest.raises(NodeError, match="longer than the model's context of 4"):
        DiscreteTemplate(length=6).run().encode(den)
    with pytest.raises(NodeError, match=r"'z' at byte 1 .* not in the model's vocabulary"):
        DiscreteInfill(text="az_").run().encode(den)
    with pytest.raises(NodeError, match="leaving no position"):
        DiscreteTemplate(length=3, prompt="abc").run().encode(den)


def test_total_variation_of_identical_and_disjoint_distributions():
    p = {(0,): 0.5, (1,): 0.5}
    assert total_variation(p, p) == 0.0 and total_variation(p, {(2,): 1.0}) == 1.0


def test_texts_of_different_lengths_end_in_fixed_eos_padding():
    den = ModelExactDiscrete(length=6).run()
    tokens, fixed = DiscreteInfill(text=["a_", "_b_c"]).run().encode(den)
    eos, m = den.eos_id, den.mask_id
    assert tokens.tolist() == [[0, m, eos, eos], [m, 1, m, 2]]
    assert fixed.tolist() == [[True, False, True, True], [False, True, False, True]]
