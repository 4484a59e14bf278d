"""LM transforms: parity with transformers' logits processors on random logits (same kept sets, same
renormalised probabilities), per-window-position application, and exact distributions on model.table_lm
(ancestral sampling through each transform matches the transformed model's enumerated distribution)."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare

from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.lm.exact import enumerate_sequences
from samplegraph.nodes.lm.generate import Generate
from samplegraph.nodes.lm.model import LanguageModel
from samplegraph.nodes.lm.prompt import Prompts
from samplegraph.nodes.lm.state import TokenState
from samplegraph.nodes.lm.table_lm import ModelTableLM
from samplegraph.nodes.lm.transforms.epsilon import Epsilon, LMEpsilon
from samplegraph.nodes.lm.transforms.eta import Eta, LMEta
from samplegraph.nodes.lm.transforms.min_p import LMMinP, MinP
from samplegraph.nodes.lm.transforms.repetition_penalty import LMRepetitionPenalty, RepetitionPenalty
from samplegraph.nodes.lm.transforms.temperature import LMTemperature, Temperature
from samplegraph.nodes.lm.transforms.top_k import LMTopK, TopK
from samplegraph.nodes.lm.transforms.top_p import LMTopP, TopP
from samplegraph.nodes.lm.transforms.typical import LMTypical, Typical
from samplegraph.nodes.lm.vocab import Vocabulary

MARKOV = dict(tokens=["a", "bc", "é"], start=[1, 1, 1, 1],
              transitions=[[0, 5, 2, 1], [3, 1, 0, 1], [1, 4, 2, 3]])


class FixedLM(LanguageModel):
    """Returns the same log-probs (B, W, V) whatever the state: a carrier of random logits."""

    def __init__(self, logp: torch.Tensor):
        self.logp, self.max_length = logp, 1 << 20
        self.vocab = Vocabulary(tokens=tuple(bytes([65 + i % 26]) * (1 + i // 26) for i in range(logp.shape[-1])),
                                eos=frozenset({0}))

    def encode(self, text: str) -> list[int]:
        return [1]

    def next_logprobs(self, state: TokenState, window: int = 1):
        return self.logp, state


def random_logits(seed: int, b: int = 64, v: int = 40, with_inf: bool = True) -> torch.Tensor:
    """(b, v) float64 logits of varied sharpness; some rows with impossible tokens."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.linspace(-1.0, 2.0, b, dtype=torch.float64))[:, None]  # (b, 1) flat .. sharp
    x = torch.randn(b, v, generator=g, dtype=torch.float64) * scale
    if with_inf:
        x[::3, torch.randperm(v, generator=g)[:v // 4]] = -math.inf
    return x


def ours(transform_of, logits: torch.Tensor) -> torch.Tensor:
    """Our transform's probabilities (B, V) on the log-softmax of `logits`."""
    logp = torch.log_softmax(logits, -1)[:, None]  # (B, 1, V)
    lm = transform_of(FixedLM(logp))
    state = TokenState.from_prompts([[1]] * logits.shape[0], torch.arange(logits.shape[0]), 2)
    return torch.exp(lm.next_logprobs(state)[0][:, 0])


def theirs(processor, logits: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
    ids = torch.ones(logits.shape[0], 1, dtype=torch.long) if ids is None else ids
    return torch.softmax(processor(ids, logits.clone()), -1)


def assert_same(p: torch.Tensor, q: torch.Tensor) -> None:
    assert torch.equal(p > 0, q > 0), "kept sets differ"
    assert torch.allclose(p, q, atol=1e-12, rtol=1e-9)


TF = pytest.importorskip  # transformers is optional: the parity tests skip without it


def warpers():
    gen = TF("transformers.generation.logits_process", reason="transformers (the `lm` extra) gives the parity peer")
    return [
        ("temperature 0.7", lambda lm: Temperature(lm, 0.7), gen.TemperatureLogitsWarper(0.7)),
        ("temperature 1.9", lambda lm: Temperature(lm, 1.9), gen.TemperatureLogitsWarper(1.9)),
        ("top_k 1", lambda lm: TopK(lm, 1), gen.TopKLogitsWarper(1)),
        ("top_k 7", lambda lm: TopK(lm, 7), gen.TopKLogitsWarper(7)),
        ("top_k 100", lambda lm: TopK(lm, 100), gen.TopKLogitsWarper(100)),
        ("top_p 0.3", lambda lm: TopP(lm, 0.3), gen.TopPLogitsWarper(0.3)),
        ("top_p 0.9", lambda lm: TopP(lm, 0.9), gen.TopPLogitsWarper(0.9)),
        ("top_p 0.9 keep 5", lambda lm: TopP(lm, 0.9, 5), gen.TopPLogitsWarper(0.9, min_tokens_to_keep=5)),
        ("top_p 1", lambda lm: TopP(lm, 1.0), gen.TopPLogitsWarper(1.0)),
        ("min_p 0.05", lambda lm: MinP(lm, 0.05), gen.MinPLogitsWarper(0.05)),
        ("min_p 0.5 keep 3", lambda lm: MinP(lm, 0.5, 3), gen.MinPLogitsWarper(0.5, min_tokens_to_keep=3)),
        ("typical 0.2", lambda lm: Typical(lm, 0.2), gen.TypicalLogitsWarper(0.2)),
        ("typical 0.9", lambda lm: Typical(lm, 0.9), gen.TypicalLogitsWarper(0.9)),
        ("typical 0.9 keep 4", lambda lm: Typical(lm, 0.9, 4), gen.TypicalLogitsWarper(0.9, min_tokens_to_keep=4)),
        ("epsilon 0.02", lambda lm: Epsilon(lm, 0.02), gen.EpsilonLogitsWarper(0.02)),
        ("epsilon 0.3 keep 2", lambda lm: Epsilon(lm, 0.3, 2), gen.EpsilonLogitsWarper(0.3, min_tokens_to_keep=2)),
        ("eta 0.01", lambda lm: Eta(lm, 0.01), gen.EtaLogitsWarper(0.01)),
        ("eta 0.2 keep 3", lambda lm: Eta(lm, 0.2, 3), gen.EtaLogitsWarper(0.2, min_tokens_to_keep=3)),
    ]


def test_every_truncation_and_temperature_matches_its_transformers_warper():
    for seed in range(3):
        for with_inf in (False, True):
            logits = random_logits(seed, with_inf=with_inf)
            for name, transform_of, warper in warpers():
                p, q = ours(transform_of, logits), theirs(warper, logits)
                try:
                    assert_same(p, q)
                except AssertionError as e:
                    raise AssertionError(f"{name} (seed {seed}, -inf {with_inf}): {e}") from None
                kept = (p > 0).sum(-1)
                assert kept.min() >= 1 and torch.allclose(p.sum(-1), torch.ones_like(p[:, 0]))


def test_the_truncations_really_truncate_on_these_logits():
    """The parity above compares non-trivial kept sets: each rule keeps neither one token everywhere nor all."""
    logits = random_logits(0, with_inf=False)
    for name, transform_of, _ in warpers():
        kept = (ours(transform_of, logits) > 0).sum(-1)
        if name.startswith(("temperature", "top_p 1", "top_k 100")):
            assert (kept == 40).all(), name
        elif name.startswith("top_k"):
            assert (kept == int(name.split()[1])).all(), name
        else:
            assert kept.min() < 40 and kept.max() > 1, name


def test_ties_at_the_boundary_are_kept_together():
    """Our stated convention (transformers' top-k keeps ties; its top-p keeps an arbitrary subset of them)."""
    logp = torch.log(torch.tensor([[0.4, 0.2, 0.2, 0.2]], dtype=torch.float64))
    assert (ours(lambda lm: TopK(lm, 2), logp) > 0).tolist() == [[True, True, True, True]]
    assert (ours(lambda lm: TopP(lm, 0.5), logp) > 0).tolist() == [[True, True, True, True]]
    assert (ours(lambda lm: TopP(lm, 0.4), logp) > 0).tolist() == [[True, False, False, False]]
    assert (ours(lambda lm: MinP(lm, 0.9, 2), logp) > 0).tolist() == [[True, True, True, True]]


def test_repetition_penalty_matches_transformers_on_the_same_scores():
    gen = TF("transformers.generation.logits_process", reason="transformers (the `lm` extra) gives the parity peer")
    g = torch.Generator().manual_seed(0)
    b, v, t = 16, 30, 9
    ids = torch.randint(0, v, (b, t), generator=g)  # (B, T) rows; prompt lengths vary
    prompt = torch.randint(1, t, (b,), generator=g)
    logp = torch.log_softmax(torch.randn(b, v, generator=g, dtype=torch.float64) * 2, -1)
    state = TokenState.from_prompts(ids.tolist(), torch.arange(b), t)
    state = state.replace(prompt_length=prompt)
    for penalty in (1.3, 0.6):
        for include_prompt in (True, False):
            lm = RepetitionPenalty(FixedLM(logp[:, None]), penalty, include_prompt)
            p = torch.exp(lm.next_logprobs(state)[0][:, 0])
            peer = gen.RepetitionPenaltyLogitsProcessor(penalty, None if include_prompt else prompt.clone())
            assert_same(p, theirs(peer, logp, ids))
            assert not torch.allclose(p, torch.exp(logp))


def test_repetition_penalty_sees_each_window_positions_own_prefix():
    gen = TF("transformers.generation.logits_process", reason="transformers (the `lm` extra) gives the parity peer")
    g = torch.Generator().manual_seed(1)
    b, v, t, w = 6, 12, 8, 4
    ids = torch.randint(0, v, (b, t), generator=g)
    logp = torch.log_softmax(torch.randn(b, w, v, generator=g, dtype=torch.float64) * 2, -1)  # (B, W, V)
    state = TokenState.from_prompts(ids.tolist(), torch.arange(b), t)
    out = torch.exp(RepetitionPenalty(FixedLM(logp), 1.5).next_logprobs(state, w)[0])  # (B, W, V)
    for k in range(w):  # distribution k conditions on the first t - w + 1 + k tokens
        peer = gen.RepetitionPenaltyLogitsProcessor(1.5)
        assert_same(out[:, k], theirs(peer, logp[:, k], ids[:, :t - w + 1 + k]))


NODES = [LMTemperature(temperature=0.6), LMTemperature(temperature=1.7), LMTopK(k=2), LMTopP(p=0.8),
         LMMinP(min_p=0.3), LMTypical(mass=0.8), LMEta(epsilon=0.2), LMEpsilon(epsilon=0.25),
         LMRepetitionPenalty(penalty=2.0), LMRepetitionPenalty(penalty=0.5, include_prompt=False)]
IDS = [f"{n.model_dump()}" for n in NODES]


@pytest.mark.parametrize("transform", NODES, ids=IDS)
def test_every_transform_applies_per_window_position(transform):
    """next_logprobs(window=3) through a transform equals three window-1 calls on the shorter prefixes."""
    table = ModelTableLM(**MARKOV).run()
    lm = transform.run(table)
    state = table.start([table.encode("abcé"), table.encode("éaa")], torch.arange(2), 2)
    state = state.replace(prompt_length=torch.ones_like(state.length))  # so truncate can cut into the rows
    wide = lm.next_logprobs(state, 3)[0]  # (B, 3, V)
    for k in range(3):
        short = state.truncate(state.length - (2 - k))
        assert torch.allclose(wide[:, k], lm.next_logprobs(short)[0][:, 0], atol=1e-12)


N_EXACT, MAX_NEW, P_FLOOR = 6000, 4, 1e-3


def sequence_counts(gens, seqs: dict) -> tuple[list[float], list[float]]:
    """(observed, expected) counts over the enumerated sequences, small expected bins pooled (>= 5 each)."""
    counts: dict = {}
    for ids in gens.token_ids:
        counts[ids] = counts.get(ids, 0) + 1
    assert set(counts) <= set(seqs), "a sampled sequence the transformed model gives probability 0"
    obs, exp, pool_o, pool_e = [], [], 0.0, 0.0
    for s, lp in sorted(seqs.items(), key=lambda kv: -kv[1]):
        e = math.exp(lp) * len(gens)
        if e >= 5:
            obs.append(counts.get(s, 0)), exp.append(e)
        else:
            pool_o, pool_e = pool_o + counts.get(s, 0), pool_e + e
    if pool_e > 0:
        obs.append(pool_o), exp.append(pool_e)
    return obs, exp


def chi2_p(gens, seqs: dict) -> float:
    obs, exp = sequence_counts(gens, seqs)
    assert len(obs) >= 5, "too few bins for the test to have power: choose milder transform parameters"
    scale = sum(obs) / sum(exp)  # exact up to rounding of the enumerated probabilities
    return float(chisquare(obs, [e * scale for e in exp]).pvalue)


@pytest.mark.parametrize("transform", NODES, ids=IDS)
def test_sampling_through_each_transform_matches_its_exact_sequence_distribution(transform):
    """Chi-square of lm.generate's sequences (N=6000, 4 tokens) against the enumerated distribution of the
    transformed table model: p > 1e-3 for it, p < 1e-3 for the untransformed model (so the test has power)."""
    table = ModelTableLM(**MARKOV).run()
    lm = transform.run(table)
    prompt = "a"
    seqs = enumerate_sequences(lm, lm.encode(prompt), MAX_NEW)
    assert sum(math.exp(v) for v in seqs.values()) == pytest.approx(1.0, abs=1e-9)
    gens = Generate(max_new_tokens=MAX_NEW, particles=N_EXACT).run(lm, Prompts((prompt,)), NodeContext.detached(seed=3))
    assert chi2_p(gens, seqs) > P_FLOOR
    plain = enumerate_sequences(table, table.encode(prompt), MAX_NEW)
    assert set(gens.token_ids) <= set(seqs)
    assert chi2_p_allowing_zeros(gens, plain) < P_FLOOR


def chi2_p_allowing_zeros(gens, seqs: dict) -> float:
    """Like chi2_p, but a sample of a sequence `seqs` never gives counts as a certain rejection."""
    if not set(gens.token_ids) <= set(seqs):
        return 0.0
    return chi2_p(gens, seqs)
