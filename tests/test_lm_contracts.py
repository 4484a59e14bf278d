"""The token half's contracts: TokenState gathers, appends and truncates row-wise; token draws are keyed
by (seed, particle, position, slot) whatever the batch split; potentials are counted; Generations
round-trip through the cache encoding."""
from __future__ import annotations

import math

import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.lm.draws import categorical, gumbel, uniform
from samplegraph.nodes.lm.generations import Generations
from samplegraph.nodes.lm.model import normalise
from samplegraph.nodes.lm.potential import CountingPotential, Evaluations, Potential
from samplegraph.nodes.lm.state import ModelCache, TokenState
from samplegraph.nodes.lm.vocab import Vocabulary
from samplegraph.nodes.search.particles import Particles


class RowCache(ModelCache):
    """A cache that remembers which original row each row came from."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def select(self, idx: torch.Tensor) -> "RowCache":
        return RowCache(self.rows[idx])


VOCAB = Vocabulary(tokens=(b"", b"a", b"b", b"ab", b"\xc3"), eos=frozenset({0}))


def state3() -> TokenState:
    s = TokenState.from_prompts([[1], [2, 2], [3]], torch.arange(3), capacity=4)
    return s.replace(cache=RowCache(torch.arange(3)))


def test_vocabulary_rejects_bad_eos_and_decodes_bytes():
    with pytest.raises(NodeError, match="outside the vocabulary"):
        Vocabulary(tokens=(b"a",), eos=frozenset({3}))
    assert VOCAB.decode([1, 3, 0]) == b"aab"
    assert VOCAB.id_of(b"ab") == 3 and VOCAB.id_of(b"zz") is None
    assert VOCAB.is_eos(torch.tensor([0, 1])).tolist() == [True, False]
    with pytest.raises(NodeError, match="token id 9"):
        VOCAB.check_ids([1, 9], "prompt")


def test_token_state_gathers_every_row_field_and_the_cache():
    s = state3().append(torch.tensor([1, 0, 2]), logp=torch.tensor([-1.0, -2.0, -3.0]),
                        eos=torch.tensor([False, True, False]))
    g = s[torch.tensor([2, 2, 0])]
    assert g.cache.rows.tolist() == [2, 2, 0]
    assert g.length.tolist() == [2, 2, 2] and g.done.tolist() == [False, False, False]
    assert g.generated(0) == [2] and g.generated(2) == [1]
    assert g.logp.tolist() == [-3.0, -3.0, -1.0]
    # a done row is never extended; capacity ends rows
    s2 = s.append(torch.tensor([3, 3, 3]))
    assert s2.length.tolist() == [3, 3, 3] and s2.generated(1) == [0]
    s3 = s2.append(torch.tensor([1, 1, 1]))
    assert s3.done.tolist() == [True, True, True] and s3.length.tolist() == [4, 3, 4]


def test_truncate_reopens_rows_and_caps_the_cache():
    s = state3().append(torch.tensor([1, 0, 2]), eos=torch.tensor([False, True, False]))
    s = s.replace(cached=s.length.clone())
    t = s.truncate(torch.tensor([1, 2, 1]))
    assert t.length.tolist() == [1, 2, 1] and t.cached.tolist() == [1, 2, 1]
    assert t.done.tolist() == [False, False, False]


def test_particles_fork_a_token_state():
    p = Particles.start(state3())
    child = p.fork(torch.tensor([1, 1, 0]), step=0)
    assert child.state.cache.rows.tolist() == [1, 1, 0]
    ids = child.state.particle.tolist()
    assert ids[0] != ids[1] and ids[2] == 0  # copies get fresh noise keys, a single copy keeps its own


@pytest.mark.parametrize("draw", [
    lambda n, p, pos: gumbel(n, p, pos, 7),
    lambda n, p, pos: uniform(n, p, pos, 3),
])
def test_token_draws_do_not_depend_on_the_batch_split(draw):
    noise = NoiseSource(11)
    particle, position = torch.tensor([5, 9, 2, 7]), torch.tensor([3, 3, 8, 0])
    whole = draw(noise, particle, position)
    parts = torch.cat([draw(noise, particle[i:i + 1], position[i:i + 1]) for i in (3, 0, 2, 1)])
    assert torch.equal(whole, parts[torch.tensor([1, 3, 2, 0])])
    assert torch.isfinite(whole).all()
    other = draw(noise, particle, position + 1)
    assert not torch.equal(whole, other)


def test_categorical_matches_its_distribution():
    logp = normalise(torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]], dtype=torch.float64)))
    n = 20000
    draws = categorical(NoiseSource(0), logp.expand(n, 4), torch.arange(n), torch.zeros(n, dtype=torch.long))
    freq = torch.bincount(draws, minlength=4).double() / n
    se = torch.sqrt(torch.tensor([0.5, 0.3, 0.2, 0.0]) * (1 - torch.tensor([0.5, 0.3, 0.2, 0.0])) / n)
    assert freq[3] == 0
    assert (torch.abs(freq - torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)) <= 4 * se + 1e-12).all()
    with pytest.raises(NodeError, match="all -inf"):
        categorical(NoiseSource(0), torch.full((1, 3), -math.inf), torch.arange(1), torch.zeros(1, dtype=torch.long))


class EndsWithA(Potential):
    """Prefixes are always fine; a complete text must end with 'a'."""

    def prefix(self, texts):
        return torch.zeros(len(texts), dtype=torch.float64)

    def complete(self, texts):
        return torch.tensor([0.0 if t.endswith(b"a") else -math.inf for t in texts], dtype=torch.float64)


def test_bound_potential_evaluates_candidates_and_masks_with_counts():
    s = state3().append(torch.tensor([1, 2, 3]))
    ev = Evaluations()
    pot = CountingPotential(EndsWithA().bind(VOCAB), ev)
    vals = pot.candidates(s, torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]))
    assert vals.tolist() == [0.0, -math.inf, 0.0]  # row 0 ends "a"; row 1 ends "b"; extension always fine
    mask = pot.mask(s)
    assert mask.shape == (3, 5) and mask[1, 0] == -math.inf and mask[0, 0] == 0.0
    assert ev.report() == {"constraint_evaluations": 3 + 15, "constraint_masks": 3, "constraint_calls": 2}


def test_generations_round_trip_through_the_cache_encoding():
    s = state3().append(torch.tensor([4, 0, 3]), eos=torch.tensor([False, True, False]))
    g = Generations.of(s, VOCAB, log_weight=torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64),
                       group=torch.tensor([0, 0, 1]))
    assert g.texts == ("\ufffd", "", "ab") and g.finished.tolist() == [False, True, False]
    tensors, meta = g.cache_encode()
    back = Generations.cache_decode(tensors, meta)
    assert back.rows() == g.rows() and back.rows()[2] == {"text": "ab", "token_ids": [3], "log_weight": 2.0,
                                                         "group": 1, "finished": False}


def test_a_bool_mask_selects_its_true_rows():
    s = state3()
    picked = s[torch.tensor([True, False, True])]
    assert picked.cache.rows.tolist() == [0, 2] and picked.length.tolist() == [1, 1]
