"""discrete_sampler.confidence on model.exact_discrete, against its enumerated distribution: the bias of
parallel decoding shrinks as steps grow to L; with one position per step an order that depends only on
the current sequence (random, margin, entropy) is exact while confidence's (which looks at the drawn
token) is not; argmax decoding against a brute-force reference; semi-autoregressive blocks."""
from __future__ import annotations

import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.discrete.exact import empirical, exact_distribution, expected_tv, total_variation
from samplegraph.nodes.discrete.exact_model import ModelExactDiscrete
from samplegraph.nodes.discrete.sampler import run_discrete
from samplegraph.nodes.discrete.samplers.confidence import Confidence
from samplegraph.nodes.discrete.schedules.cosine import CosineSchedule
from samplegraph.nodes.discrete.schedules.linear import LinearSchedule
from samplegraph.nodes.discrete.template import DiscreteInfill, DiscreteTemplate

L, N = 5, 20000
DEN = ModelExactDiscrete(length=L).run()
EXACT = exact_distribution(DEN)
FLOOR = expected_tv(EXACT, N)  # ~0.040


def sample(sampler: Confidence, steps: int, n: int = N, seed: int = 0, length: int = L, den=DEN):
    state, _, _ = DiscreteTemplate(length=length).run().start(den, n, NoiseSource(seed))
    return run_discrete(sampler, den, LinearSchedule(steps), state, NoiseSource(seed))


def tv(sampler: Confidence, steps: int) -> float:
    return total_variation(empirical(sample(sampler, steps).tokens), EXACT)


@pytest.mark.parametrize("score", ["random", "margin", "entropy"])
def test_one_position_per_step_in_a_state_adapted_order_is_exact(score):
    """Measured (N = 20000, floor 0.040): random 0.039, margin 0.038, entropy 0.043."""
    assert tv(Confidence(score=score), L) < 1.3 * FLOOR


def test_parallel_decoding_bias_shrinks_as_steps_grow_to_the_length():
    """Random subsets, TV at 1, 2, 3, 5 steps: 0.688, 0.276, 0.205, 0.039 (floor 0.040)."""
    tvs = [tv(Confidence(score="random"), s) for s in (1, 2, 3, L)]
    assert tvs[0] > tvs[1] > tvs[2] > tvs[3] and tvs[0] > 10 * FLOOR


def test_confidence_order_is_biased_even_one_position_per_step():
    """p(drawn token) picks the position after seeing the draw: TV 0.688, 0.486, 0.468, 0.434 at 1, 2, 3, 5
    steps, far above the floor at every step count, shrinking all the same."""
    tvs = [tv(Confidence(score="confidence"), s) for s in (1, 3, L)]
    assert tvs[0] > tvs[1] > tvs[2] > 5 * FLOOR


def greedy_reference(den, length: int) -> list[int]:
    """Argmax decoding by hand: each step the masked position whose top probability is largest (lowest
    index on ties) takes its argmax token."""
    m = den.mask_id
    tokens = torch.full((1, length), m)
    for _ in range(length):
        p = den(tokens, torch.ones(1, dtype=torch.float64)).exp()[0]  # (L, V)
        best = max((float(p[i].max()), -i) for i in range(length) if int(tokens[0, i]) == m)
        i = -best[1]
        tokens[0, i] = int(p[i].argmax())
    return tokens[0].tolist()


def test_argmax_confidence_decoding_matches_a_brute_force_reference():
    out = sample(Confidence(temperature=0), L, n=3)
    assert out.tokens.tolist() == [greedy_reference(DEN, L)] * 3


def test_semi_autoregressive_blocks_decode_left_to_right():
    den = ModelExactDiscrete(length=6).run()
    out = sample(Confidence(block_length=2), 6, n=64, length=6, den=den)
    blocks = out.revealed.reshape(64, 3, 2)  # (B, block, position)
    assert bool((blocks[:, 0].max(-1).values < blocks[:, 1].min(-1).values).all())
    assert bool((blocks[:, 1].max(-1).values < blocks[:, 2].min(-1).values).all())
    assert bool((out.tokens != den.mask_id).all())


def test_cosine_schedule_counts_sum_to_the_holes_and_fixed_positions_stay():
    den = ModelExactDiscrete(length=6).run()
    tpl = DiscreteInfill(text="a____b").run()
    state, _, _ = tpl.start(den, 8, NoiseSource(1))
    out = run_discrete(Confidence(score="margin"), den, CosineSchedule(3), state, NoiseSource(1))
    assert bool((out.tokens[:, [0, 5]] == torch.tensor([0, 1])).all()) and bool((out.tokens != den.mask_id).all())
    per_step = torch.stack([(out.revealed == k).sum(-1) for k in (1, 2, 3)], -1)  # (B, 3)
    assert per_step[0].tolist() == [2, 1, 1]  # 4 cos(pi tau / 2) on tau = 1, 2/3, 1/3, 0: 0, 2, 3.46, 4 rounded


def test_rows_do_not_depend_on_the_batch_split():
    whole = sample(Confidence(score="confidence", score_noise=1.0), 3, n=40)
    state, _, _ = DiscreteTemplate(length=L).run().start(DEN, 40, NoiseSource(0))
    parts = [run_discrete(Confidence(score="confidence", score_noise=1.0), DEN, LinearSchedule(3), state[idx],
                          NoiseSource(0)) for idx in (torch.arange(0, 13), torch.arange(13, 40))]
    assert torch.equal(torch.cat([p.tokens for p in parts]), whole.tokens)


def test_bad_block_parameters_are_located_errors():
    with pytest.raises(NodeError, match="'block_length' \\(2\\) must divide the sequence length \\(5\\)"):
        sample(Confidence(block_length=2), 4, n=2)
    den = ModelExactDiscrete(length=6).run()
    with pytest.raises(NodeError, match="multiple of the number of blocks"):
        sample(Confidence(block_length=2), 4, n=2, length=6, den=den)
