"""Constraints over bytes and the masking strategy: regex DFAs against brute force over every short byte string
(multi-byte UTF-8, tokens that cross character boundaries), full masks against per-candidate evaluation,
llguidance JSON-schema / Lark masks against completions, lexicons, a user's predicate plugin, and lm.masked
against the exact locally constrained distribution of a small exact LM."""
from __future__ import annotations

import itertools
import math
import random
import re

import pytest
import torch
from scipy.stats import chisquare

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.lm.constraints.automaton import DEAD
from samplegraph.nodes.lm.constraints.regex import RegexConstraint
from samplegraph.nodes.lm.constraints.regex_dfa import RegexDFA
from samplegraph.nodes.lm.constraints.utf8 import utf8_sequences
from samplegraph.nodes.lm.masked import Masked
from samplegraph.nodes.lm.model import LanguageModel, normalise, window_prefix_lengths
from samplegraph.nodes.lm.potential import BytesTokenPotential, CountingPotential, Evaluations, Potential
from samplegraph.nodes.lm.prompt import Prompts
from samplegraph.nodes.lm.state import TokenState
from samplegraph.nodes.lm.vocab import Vocabulary

E_ACUTE = "é".encode()  # b"\xc3\xa9"


class MarkovLM(LanguageModel):
    """An exact LM: p(next | last token) from a (V, V) table (the prompt is the BOS token)."""

    def __init__(self, vocab: Vocabulary, logits: torch.Tensor, bos: int):
        self.vocab, self.max_length, self.bos = vocab, 64, bos
        self.table = normalise(logits.to(torch.float64))  # (V, V)

    def encode(self, text: str) -> list[int]:
        return [self.bos]

    def next_logprobs(self, state: TokenState, window: int = 1) -> tuple[torch.Tensor, TokenState]:
        last = state.tokens.gather(1, window_prefix_lengths(state, window) - 1)  # (B, W)
        return self.table[last], state.replace(cached=state.length.clone())  # (B, W, V)


# ---------------------------------------------------------------- regex DFA vs brute force


def full_match(pattern: str, text: bytes) -> bool:
    """The reference: Python's re on the decoded text (ASCII classes); invalid UTF-8 never matches."""
    try:
        return re.fullmatch(pattern, text.decode("utf-8"), re.ASCII) is not None
    except UnicodeDecodeError:
        return False


REGEXES = [  # (pattern, byte alphabet, longest string, slack: completions of valid prefixes need at most this)
    (r"[0-9]{2}-[0-9]{2}", b"0a-9", 5, 5),
    (r"(ab|a)*c?", b"abc", 7, 1),
    (r"é+|[à-ÿ]x", E_ACUTE + "à".encode() + b"x\xc3", 6, 3),
    (r"[^a]b", E_ACUTE + b"ab", 5, 4),
    (r".\d\w\s?", E_ACUTE + b"1a \n", 5, 4),
    (r"^a{2,3}(b|)$", b"ab", 6, 3),
    (r"(?:x|y){0,}z+", b"xyz", 6, 1),
    (r"[\d\-]+\.", b"1-.a", 5, 1),
]


@pytest.mark.parametrize("pattern,alphabet,longest,slack", REGEXES)
def test_regex_dfa_matches_brute_force_over_all_short_byte_strings(pattern, alphabet, longest, slack):
    dfa = RegexDFA(pattern)
    strings = [bytes(s) for n in range(longest + 1) for s in itertools.product(alphabet, repeat=n)]
    matches = {s for s in strings if full_match(pattern, s)}
    assert matches, "the alphabet must reach some matches for the test to mean anything"
    prefixes = {m[:i] for m in matches for i in range(len(m) + 1)}
    for s in strings:
        state = dfa.walk(dfa.start, s)
        assert dfa.accepting(state) == (s in matches), s
        if len(s) <= longest - slack:  # every completion within the slack was enumerated
            assert (state != DEAD) == (s in prefixes), s


def test_utf8_sequences_encode_exactly_the_code_point_ranges():
    rng = random.Random(0)
    cases = [(0, 0x7F), (0x7F, 0x80), (0, 0x7FF), (0xD000, 0xE100), (0xD800, 0xDFFF), (0xFFF0, 0x10010)]
    cases += [(a, a + rng.randrange(3000)) for a in (rng.randrange(0x11000) for _ in range(60))]
    for lo, hi in cases:
        got = {bytes(t) for seq in utf8_sequences(lo, hi) for t in itertools.product(*[range(a, b + 1) for a, b in seq])}
        assert got == {chr(c).encode() for c in range(lo, hi + 1) if not 0xD800 <= c <= 0xDFFF}, (lo, hi)


@pytest.mark.parametrize("pattern", ["(", "a)", "[a-", "a|*", "x{2}\\", "(?=a)", r"\1", "[z-a]", "a{3,2}", r"\xZZ", "*a"])
def test_malformed_regex_is_a_node_error_naming_the_parameter(pattern):
    with pytest.raises(NodeError, match="parameter 'pattern'"):
        RegexConstraint(pattern=pattern).run()


def test_regex_matching_nothing_is_a_node_error():
    with pytest.raises(NodeError, match="matches no text"):
        RegexConstraint(pattern=r"[^\x00-\U0010FFFF]").run()


# ---------------------------------------------------------------- masks vs per-candidate evaluation

MULTI = Vocabulary(tokens=(b"", b"<s>", b"a", b"b", b"ab", b"ba", E_ACUTE, b"\xc3", b"\xa9", b"a\xc3", b"\xa9b",
                           b"1", b"12", b"-", b"2-3", "€".encode(), b"\xe2\x82", b"\xac1", b""),
                   eos=frozenset({0, 18}))


def random_rows(vocab: Vocabulary, potential: Potential, rows: int, seed: int) -> TokenState:
    """Rows of random token sequences (length 0-5) kept to valid prefixes where possible, one BOS prompt token."""
    rng, seqs = random.Random(seed), []
    ids = [i for i in range(vocab.size) if i not in vocab.eos]
    for _ in range(rows):
        seq: list[int] = []
        for _ in range(rng.randrange(6)):
            options = [t for t in ids if potential.prefix([vocab.decode(seq + [t])])[0] == 0] or ids
            seq.append(rng.choice(options))
        seqs.append([1, *seq])
    return TokenState.from_prompts(seqs, torch.arange(rows), 8).replace(prompt_length=torch.ones(rows, dtype=torch.long))


@pytest.mark.parametrize("pattern", [r"(a|é)+b?", r"[0-9]+(-[0-9]+)*", r"(ab|€1|b)*é?", r"[^a]*"])
def test_full_mask_equals_per_candidate_evaluation_and_the_byte_reference(pattern):
    potential = RegexConstraint(pattern=pattern).run()
    bound = potential.bind(MULTI)
    state = random_rows(MULTI, potential, 24, seed=len(pattern))
    b, v = state.batch, MULTI.size
    mask = bound.mask(state)  # (B, V)
    rows, tokens = torch.arange(b).repeat_interleave(v), torch.arange(v).repeat(b)
    fresh = potential.bind(MULTI)  # no cached masks: candidates walk the token bytes
    assert torch.equal(fresh.candidates(state, rows, tokens).reshape(b, v), mask)
    assert torch.equal(BytesTokenPotential(potential, MULTI).mask(state), mask)
    assert torch.isinf(mask).any() and (mask == 0).any()


def test_counted_mask_counts_the_vocabulary_per_row():
    ev = Evaluations()
    pot = CountingPotential(RegexConstraint(pattern="a+").run().bind(MULTI), ev)
    pot.mask(random_rows(MULTI, RegexConstraint(pattern="a+").run(), 3, seed=0))
    assert ev.report()["constraint_evaluations"] == 3 * MULTI.size and ev.masks == 3


# ---------------------------------------------------------------- lm.masked against the exact local distribution

SMALL = Vocabulary(tokens=(b"", b"<s>", b"a", b"b", E_ACUTE, b"\xc3", b"\xa9", b"ab", b"\xa9b"), eos=frozenset({0}))


def small_lm(seed: int = 0) -> MarkovLM:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(SMALL.size, SMALL.size, generator=g, dtype=torch.float64)
    logits[:, 1] = -math.inf  # BOS is never generated
    return MarkovLM(SMALL, logits, bos=1)


def exact_local(lm: MarkovLM, potential: Potential, steps: int) -> dict[tuple[int, ...], tuple[float, float]]:
    """Every outcome of locally constrained decoding with its probability q and log p(x) phi(x) / q(x)."""
    out: dict[tuple[int, ...], tuple[float, float]] = {}

    def walk(ids: tuple[int, ...], q: float, log_w: float) -> None:
        if len(ids) == steps or (ids and ids[-1] in lm.vocab.eos):
            out[ids] = (q, log_w)
            return
        p = torch.exp(lm.table[ids[-1] if ids else lm.bos])
        text = lm.vocab.decode(ids)
        ok = [(potential.complete([text]) if t in lm.vocab.eos else potential.prefix([text + lm.vocab.tokens[t]]))[0]
              == 0 for t in range(lm.vocab.size)]
        z = float(sum(p[t] for t in range(lm.vocab.size) if ok[t]))
        for t in range(lm.vocab.size):
            if ok[t] and p[t] > 0:
                walk(ids + (t,), q * float(p[t]) / z, log_w + math.log(z))

    walk((), 1.0, 0.0)
    return out


def test_masked_samples_the_exact_locally_constrained_distribution_with_exact_weights():
    lm, potential, steps, n = small_lm(), RegexConstraint(pattern=r"(a|é)+b?").run(), 5, 4000
    exact = exact_local(lm, potential, steps)
    ctx = NodeContext.detached(seed=3)
    gen = Masked(particles=n, max_new_tokens=steps).run(lm, Prompts(("",)), potential, ctx)
    counts: dict[tuple[int, ...], int] = {}
    for ids, w in zip(gen.token_ids, gen.log_weight.tolist()):
        assert ids in exact, ids  # only outcomes of positive probability
        assert w == pytest.approx(exact[ids][1], abs=1e-9)  # the weight is the product of local normalisers
        counts[ids] = counts.get(ids, 0) + 1
    keys = sorted(exact, key=lambda k: -exact[k][0])
    big = [k for k in keys if exact[k][0] * n >= 5]
    observed = [counts.get(k, 0) for k in big] + [n - sum(counts.get(k, 0) for k in big)]
    expected = [exact[k][0] * n for k in big] + [n * (1 - sum(exact[k][0] for k in big))]
    assert len(big) >= 8 and chisquare(observed, expected).pvalue > 1e-3  # N = 4000, seed fixed
    assert ctx.metrics["constraint_evaluations"] == sum(
        min(len(ids), steps) for ids in gen.token_ids) * SMALL.size  # a full mask counts V per live row
    assert ctx.metrics["lm_calls"] == steps


def test_masked_rows_do_not_depend_on_the_batch_split():
    lm, potential = small_lm(1), RegexConstraint(pattern=r"(a|é)+b?").run()
    whole = Masked(particles=6, max_new_tokens=5).run(lm, Prompts(("",)), potential, NodeContext.detached(seed=9))
    two = Masked(particles=3, max_new_tokens=5).run(lm, Prompts(("",)), potential, NodeContext.detached(seed=9))
    assert whole.token_ids[:3] == two.token_ids


def test_unsatisfiable_constraint_is_a_node_error_at_the_first_step():
    lm = small_lm()
    with pytest.raises(NodeError, match="rejects every token of row 0"):
        Masked(particles=2, max_new_tokens=4).run(lm, Prompts(("",)), RegexConstraint(pattern="z+").run(),
                                                  NodeContext.detached(seed=0))
