"""discrete_sampler.coherent (CCD / CCD-DS, Chen et al. 2025): with history 1 and no check it is entropy /
margin / confidence top-k decoding bit for bit; one step's averaged distribution and choice by hand; the
authors' cross-step check and adaptive budget against an independent per-row reference of their rule
on the trained model (argmax decoding); the distribution over sequences on model.exact_discrete beside
confidence decoding; fewer denoiser calls with CCD-DS; seeds, batch splits, bad parameters."""
from __future__ import annotations

import math

import pydantic
import pytest
import torch

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.discrete.denoiser import CountingDiscreteDenoiser, DiscreteDenoiser
from samplegraph.nodes.discrete.exact import empirical, exact_distribution, expected_tv, total_variation
from samplegraph.nodes.discrete.exact_model import ModelExactDiscrete
from samplegraph.nodes.discrete.mdm import load_mdm
from samplegraph.nodes.discrete.sampler import DiscreteSampler, run_discrete
from samplegraph.nodes.discrete.samplers.coherent import Coherent, averaged
from samplegraph.nodes.discrete.samplers.confidence import Confidence
from samplegraph.nodes.discrete.samples import DiscreteSamples
from samplegraph.nodes.discrete.schedules.linear import LinearSchedule
from samplegraph.nodes.discrete.template import DiscreteTemplate
from samplegraph.nodes.lm.grammar import corpus
from samplegraph.nodes.lm.vocab import Vocabulary
from samplegraph.nodes.metrics.text_scores import grammar_logprobs, valid_fraction

L, N = 5, 20000
DEN = ModelExactDiscrete(length=L).run()
EXACT = exact_distribution(DEN)
FLOOR = expected_tv(EXACT, N)  # ~0.040
MDM = load_mdm()


def sample(sampler: DiscreteSampler, steps: int, n: int = N, seed: int = 0, den: DiscreteDenoiser = DEN):
    state, _, _ = DiscreteTemplate(length=den.length).run().start(den, n, NoiseSource(seed))
    return run_discrete(sampler, den, LinearSchedule(steps), state, NoiseSource(seed))


def tv(sampler: DiscreteSampler, steps: int) -> float:
    return total_variation(empirical(sample(sampler, steps).tokens), EXACT)


@pytest.mark.parametrize("score", ["entropy", "margin", "confidence"])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_history_one_without_the_check_is_top_k_decoding_bit_for_bit(score, temperature):
    a = sample(Confidence(score=score, temperature=temperature), 3, n=300)
    b = sample(Coherent(score=score, temperature=temperature, history=1, consistency="off"), 3, n=300)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.revealed, b.revealed)


class Scripted(DiscreteDenoiser):
    """Hands out fixed clean-token probabilities (L, 3) per call; tokens a, b, c and a mask (id 3)."""

    def __init__(self, calls: list[list[list[float]]]):
        self.vocab = Vocabulary(tokens=(b"a", b"b", b"c", b""), eos=frozenset({2}))
        self.mask_id, self.length = 3, 3
        self.calls = [torch.tensor(c, dtype=torch.float64) for c in calls]
        self.n = 0

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = self.calls[self.n]
        self.n += 1
        logp = torch.cat([p.log(), torch.full((3, 1), -math.inf, dtype=torch.float64)], -1)  # (L, V)
        return logp.expand(tokens.shape[0], 3, 4)


def entropy(p: list[float]) -> float:
    return -sum(q * math.log(q) for q in p)


def test_one_step_of_the_averaged_distribution_and_its_choice_by_hand():
    """Call 1: position 0 is surest and is decoded. Call 2: position 1 looks surest ([.9 .05 .05], entropy
    0.394 < 0.639) but flipped from b to a since call 1: its average [.475 .475 .05] has entropy 0.855, above
    position 2's unchanged 0.639, so CCD (d = 2) decodes position 2 where top-k by entropy decodes position 1."""
    calls = [[[0.98, 0.01, 0.01], [0.05, 0.9, 0.05], [0.8, 0.1, 0.1]],
             [[1.0, 1e-300, 1e-300], [0.9, 0.05, 0.05], [0.8, 0.1, 0.1]],
             [[1.0, 1e-300, 1e-300], [0.9, 0.05, 0.05], [0.8, 0.1, 0.1]]]
    mean = averaged(torch.tensor([calls[1], calls[0]], dtype=torch.float64).log()[None], torch.tensor([2]))
    assert mean[0].exp().tolist()[1] == pytest.approx([0.475, 0.475, 0.05], abs=1e-15)
    assert entropy([0.475, 0.475, 0.05]) > entropy([0.8, 0.1, 0.1]) > entropy([0.9, 0.05, 0.05])
    for history, second in ((2, 2), (1, 1)):
        den = Scripted(calls)
        out = sample(Coherent(history=history, consistency="off", temperature=0), 3, n=1, den=den)
        assert out.revealed[0].tolist()[0] == 1 and out.revealed[0, second] == 2
        assert out.tokens[0].tolist() == [0, 0, 0]  # each position's argmax under its current prediction


def reference(den: DiscreteDenoiser, steps: int, seek: bool, warmup: int = 5, expand: float = 4.0) -> tuple[list[int], int]:
    """The authors' rule (their `_sample_inference_lookahead`, argmax decoding, entropy ranking of the current
    prediction) written per position with Python lists, the linear schedule's counts per step: (tokens, calls)."""
    length, mask = den.length, den.mask_id
    x = [mask] * length
    prev_top: set[int] = set()
    prev_arg: list[int] = []
    calls = 0
    for i in range(steps):
        masked = [j for j in range(length) if x[j] == mask]
        if not masked:
            break
        logp = den(torch.tensor([x]), torch.ones(1, dtype=torch.float64))[0].to(torch.float64)  # (L, V)
        calls += 1
        p = logp.exp()
        neg_ent = [float(torch.where(p[j] > 0, p[j] * logp[j], torch.zeros_like(p[j])).sum()) for j in range(length)]
        arg = [int(logp[j].argmax()) for j in range(length)]
        k = length - round(length * i / steps) if i == steps - 1 else round(length * (i + 1) / steps) - round(length * i / steps)
        k = min(k, len(masked))
        order = sorted(masked, key=lambda j: (-neg_ent[j], j))
        top = k + math.floor(k * expand)
        if i < warmup - 1:
            w = 1
        elif len(masked) <= 0.1 * length:
            w = min(2, top)
        else:
            w = min(max(i - warmup + 3, 1), top)
        chosen = order[:k]
        if warmup <= i < steps - 1 and k > 0 and any(j in prev_top for j in chosen):
            passing = [j for j in order[:w] if j in prev_top and arg[j] == prev_arg[j]]
            if len(passing) >= k:
                chosen = passing if seek else passing[:k]
        for j in chosen:
            x[j] = arg[j]
        prev_top, prev_arg = set([j for j in order if j not in chosen][:w]), arg
    return x, calls


@pytest.mark.parametrize("steps", [65, 20])
@pytest.mark.parametrize("mode", ["adaptive", "rectify"])
def test_the_cross_step_check_matches_a_per_position_reference_of_the_authors_rule(steps, mode):
    """Argmax decoding of the trained model from all-masked (one row: it is deterministic)."""
    counted = CountingDiscreteDenoiser(MDM)
    out = sample(Coherent(history=1, consistency=mode, temperature=0), steps, n=1, den=counted)
    tokens, calls = reference(MDM, steps, seek=mode == "adaptive")
    assert out.tokens[0].tolist() == tokens and counted.calls == calls
    assert (calls < steps) == (mode == "adaptive")  # measured: 65 steps -> 37 calls, 20 -> 15


@pytest.mark.parametrize("history", [1, 2, 3])
def test_one_position_per_step_is_exact_for_any_history_and_parallel_bias_shrinks(history):
    """The ranking depends only on the states so far, each token is drawn from the current conditional: with
    one position per step the law is exact whatever d. TV (N = 20000, floor 0.040) at 1, 2, 3, 5 steps:
    d = 1: 0.688 0.341 0.223 0.043 (= entropy top-k); d = 2: 0.688 0.341 0.220 0.038; d = 3: 0.688 0.341
    0.220 0.039."""
    tvs = [tv(Coherent(history=history, consistency="off"), s) for s in (1, 2, 3, L)]
    assert tvs[0] > tvs[1] > tvs[2] > tvs[3] and tvs[3] < 1.3 * FLOOR and tvs[0] > 10 * FLOOR
    if history == 1:
        assert tvs == [tv(Confidence(score="entropy"), s) for s in (1, 2, 3, L)]


def test_tokens_drawn_from_the_average_are_biased():
    """p_bar mixes in predictions made before the neighbours were decoded: TV 0.237 at one position per step."""
    assert tv(Coherent(history=2, consistency="off", token_from="average"), L) > 4 * FLOOR


def test_ccd_ds_takes_fewer_denoiser_calls_on_the_exact_model_and_the_trained_model():
    """Exact model, L = 10, 10 steps, warmup 2, 4000 rows: steps per row 10 (off) vs 5.91 (adaptive); TV to the
    exact law 0.354 vs 0.564 (floor at this N ~0.3). Trained model, 65 steps, 64 rows (T = 1): 22.6 calls per
    row instead of 65, 36% valid (entropy top-k in 65 steps: 77%; in 40: 38%; benchmarks/discrete.py)."""
    den = ModelExactDiscrete(length=10).run()
    exact = exact_distribution(den)
    fixed = sample(Coherent(consistency="off", warmup=2), 10, n=4000, den=den)
    ds = sample(Coherent(consistency="adaptive", warmup=2), 10, n=4000, den=den)
    assert float(fixed.step.double().mean()) == 10 and float(ds.step.double().mean()) < 7
    assert total_variation(empirical(ds.tokens), exact) > total_variation(empirical(fixed.tokens), exact)
    out = sample(Coherent(), 65, n=64, den=MDM)
    texts = list(DiscreteSamples.of_state(out, MDM).texts)
    assert float(out.step.double().mean()) < 30 and bool((out.tokens != MDM.mask_id).all())
    assert valid_fraction(grammar_logprobs(texts, corpus())) > 0.25


@pytest.mark.parametrize("score", ["entropy", "margin", "confidence"])
def test_with_llada_blocks_history_one_without_the_check_is_block_top_k_bit_for_bit(score):
    """block_length as discrete_sampler.confidence's: the exact model in blocks of 1 (10 steps), the trained model
    in blocks of 13 (5 blocks, 10 steps)."""
    for den, block, steps, n in ((DEN, 1, 10, 300), (MDM, 13, 10, 16)):
        a = sample(Confidence(score=score, block_length=block), steps, n=n, den=den)
        b = sample(Coherent(score=score, history=1, consistency="off", block_length=block), steps, n=n, den=den)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.revealed, b.revealed)


def test_block_length_at_its_default_keeps_the_cache_key():
    """block_length came after workflows/mdm_coherent.json's keys were recorded: None stays out of the key."""
    assert "block_length" not in Coherent().key_params()
    assert Coherent(block_length=13).key_params()["block_length"] == 13


def block_order_holds(revealed: torch.Tensor, block: int) -> bool:
    """Every position of block j is revealed no later than every position of block j + 1, in every row."""
    per = revealed.reshape(revealed.shape[0], -1, block)  # (B, blocks, block)
    return bool((per.max(-1).values[:, :-1] <= per.min(-1).values[:, 1:]).all())


@pytest.mark.parametrize("mode", ["off", "rectify", "adaptive"])
def test_llada_blocks_decode_left_to_right_and_ccd_ds_hands_saved_steps_on(mode):
    """Trained model, blocks of 13 (5 x 13 steps, warmup 3), 32 rows: blocks in order, nothing masked at the end;
    CCD-DS jumps to the next block when one is done, so it makes fewer denoiser calls per row than the 65 steps
    (the others make all 65)."""
    den = CountingDiscreteDenoiser(MDM)
    out = sample(Coherent(consistency=mode, block_length=13, warmup=3), 65, n=32, den=den)
    assert block_order_holds(out.revealed, 13) and bool((out.tokens != MDM.mask_id).all())
    calls_per_row = den.rows / 32
    assert calls_per_row < 50 if mode == "adaptive" else calls_per_row == 65
    texts = list(DiscreteSamples.of_state(out, MDM).texts)
    assert valid_fraction(grammar_logprobs(texts, corpus())) > 0.25


def test_rows_do_not_depend_on_the_batch_split_and_seeds_repeat():
    whole = sample(Coherent(history=3, warmup=2), 5, n=40, den=ModelExactDiscrete(length=8).run())
    den = ModelExactDiscrete(length=8).run()
    state, _, _ = DiscreteTemplate(length=8).run().start(den, 40, NoiseSource(0))
    parts = [run_discrete(Coherent(history=3, warmup=2), den, LinearSchedule(5), state[idx], NoiseSource(0))
             for idx in (torch.arange(0, 13), torch.arange(13, 40))]
    assert torch.equal(torch.cat([p.tokens for p in parts]), whole.tokens)
    again = sample(Coherent(history=3, warmup=2), 5, n=40, den=den)
    other = sample(Coherent(history=3, warmup=2), 5, n=40, den=den, seed=1)
    assert torch.equal(again.tokens, whole.tokens) and not torch.equal(other.tokens, whole.tokens)


def test_bad_parameters_and_models_are_located_errors():
    for bad in ({"history": 0}, {"warmup": 1}, {"expand_ratio": -1.0}, {"consistency": "always"}):
        with pytest.raises(pydantic.ValidationError, match=next(iter(bad))):
            Coherent(**bad)
    with pytest.raises(NodeError, match=r"'block_length' \(3\) must divide the sequence length \(5\)"):
        sample(Coherent(block_length=3), 5, n=2)
    with pytest.raises(NodeError, match=r"steps \(3\) must be a multiple of the number of blocks"):
        sample(Coherent(block_length=1), 3, n=2)
    with pytest.raises(NodeError, match="steps masked diffusion models, but the model is a uniform-noise model"):
        sample(Coherent(), 3, n=2, den=ModelExactDiscrete(length=3, noise="uniform").run())
