"""Constraints over bytes and the masking strategy: regex DFAs against brute force over every short byte string
(multi-byte UTF-8, tokens that cross character boundaries), full masks against per-candidate evaluation,
llguidance JSON-schema / Lark masks against completions, lexicons, a user's predicate plugin, and lm.masked
against the exact locally constrained distribution of a small exact LM."""
from __future__ import annotations

import itertools
import json
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


# ---------------------------------------------------------------- llguidance: JSON schema and Lark

JSON_VOCAB = Vocabulary(tokens=(b"", b"<s>", b'{"', b'":', b'"name', b'"age', b'":"', b'",', b"12", b'1}', b'"}',
                                b'"tags":["', b'"]', E_ACUTE, b"\xc3\xa9b", b"ag", b"me", b"") + tuple(
                                bytes([c]) for c in b'{}":,[] abegmnstx0123456789-\xc3\xa9'),
                        eos=frozenset({0, 17}))
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 3},
                                           "age": {"type": "integer", "minimum": 0},
                                           "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
          "required": ["name", "age"], "additionalProperties": False}
CLOSERS = [b"}", b'"}', b'1}', b'"]', b"]", b'",', b'"', b"1", b",", b"a", b":", b'":', b'"age', b'"name']


def greedy_complete(bound, ids: list[int], limit: int = 40) -> list[int] | None:
    """Masked greedy decoding that prefers closing tokens (EOS first): the ids extended until EOS, or None."""
    order = sorted(JSON_VOCAB.eos) + [JSON_VOCAB.id_of(c) for c in CLOSERS]
    order += [i for i in range(JSON_VOCAB.size) if i not in order]
    for _ in range(limit):
        state = TokenState.from_prompts([[1, *ids]], torch.arange(1), 64).replace(prompt_length=torch.ones(1, dtype=torch.long))
        mask = bound.mask(state)[0]
        pick = next((t for t in order if mask[t] == 0), None)
        if pick is None:
            return None
        ids = ids + [pick]
        if pick in JSON_VOCAB.eos:
            return ids
    return None


def test_json_schema_masks_keep_every_allowed_token_completable_to_a_valid_document():
    pytest.importorskip("llguidance", reason="grammar constraints need llguidance (the lm extra)")
    jsonschema = pytest.importorskip("jsonschema", reason="the test extra provides jsonschema")
    from samplegraph.nodes.lm.constraints.json_schema import JsonSchemaConstraint

    potential = JsonSchemaConstraint(json_schema=PERSON).run()
    bound = potential.bind(JSON_VOCAB)
    rng, checked = random.Random(0), 0
    for _ in range(6):  # random masked paths; at each step every allowed token is completed greedily
        ids: list[int] = []
        for _ in range(8):
            state = TokenState.from_prompts([[1, *ids]], torch.arange(1), 64).replace(prompt_length=torch.ones(1, dtype=torch.long))
            allowed = (bound.mask(state)[0] == 0).nonzero().flatten().tolist()
            for t in allowed:
                done = greedy_complete(bound, ids + [t])
                assert done is not None, (JSON_VOCAB.decode(ids), JSON_VOCAB.tokens[t])
                doc = json.loads(JSON_VOCAB.decode(done))
                jsonschema.validate(doc, PERSON)
                checked += 1
            live = [t for t in allowed if t not in JSON_VOCAB.eos]
            if not live:
                break
            ids.append(rng.choice(live))
    assert checked > 100


def test_json_schema_mask_is_byte_exact_not_canonical_tokens():
    pytest.importorskip("llguidance", reason="grammar constraints need llguidance (the lm extra)")
    from samplegraph.nodes.lm.constraints.json_schema import JsonSchemaConstraint

    bound = JsonSchemaConstraint(json_schema=PERSON).run().bind(JSON_VOCAB)
    state = TokenState.from_prompts([[1]], torch.arange(1), 8).replace(prompt_length=torch.ones(1, dtype=torch.long))
    allowed = {JSON_VOCAB.tokens[t] for t in (bound.mask(state)[0] == 0).nonzero().flatten().tolist()}
    assert allowed == {b"{", b'{"'}  # both spell a valid prefix (llguidance's forcing would keep only '{"')


@pytest.mark.parametrize("kind", ["json", "lark"])
def test_grammar_full_mask_equals_candidates_and_the_byte_level_potential(kind):
    pytest.importorskip("llguidance", reason="grammar constraints need llguidance (the lm extra)")
    from samplegraph.nodes.lm.constraints.json_schema import JsonSchemaConstraint
    from samplegraph.nodes.lm.constraints.lark import LarkConstraint

    if kind == "json":
        potential, vocab = JsonSchemaConstraint(json_schema=PERSON).run(), JSON_VOCAB
    else:
        potential, vocab = LarkConstraint(grammar='start: ("a" | "é")+ "b"?').run(), MULTI
    state = random_rows(vocab, potential, 16, seed=1)
    b, v = state.batch, vocab.size
    mask = potential.bind(vocab).mask(state)
    rows, tokens = torch.arange(b).repeat_interleave(v), torch.arange(v).repeat(b)
    from samplegraph.nodes.lm.constraints.grammar import GrammarTokenPotential

    assert torch.equal(GrammarTokenPotential(potential, vocab).candidates(state, rows, tokens).reshape(b, v), mask)
    assert torch.equal(BytesTokenPotential(potential, vocab).mask(state), mask)
    idx = torch.tensor([3, 3, 0, 7, 3])  # gathered and forked rows: matchers are keyed by token ids, not rows
    assert torch.equal(potential.bind(vocab).mask(state[idx]), mask[idx])


def test_lark_and_regex_engines_give_the_same_masks():
    pytest.importorskip("llguidance", reason="grammar constraints need llguidance (the lm extra)")
    from samplegraph.nodes.lm.constraints.lark import LarkConstraint

    regex = RegexConstraint(pattern=r"(ab|€1|b)*é?").run()
    lark = LarkConstraint(grammar='start: ("ab" | "€1" | "b")* "é"?').run()
    state = random_rows(MULTI, regex, 32, seed=5)
    assert torch.equal(lark.bind(MULTI).mask(state), regex.bind(MULTI).mask(state))


@pytest.mark.parametrize("schema,match", [({"type": "objectx"}, "Invalid type"),
                                          ({"type": "integer", "minimum": 5, "maximum": 3}, "nsatisfiable")])
def test_malformed_or_unsatisfiable_schema_is_a_node_error(schema, match):
    pytest.importorskip("llguidance", reason="grammar constraints need llguidance (the lm extra)")
    from samplegraph.nodes.lm.constraints.json_schema import JsonSchemaConstraint

    with pytest.raises(NodeError, match=f"parameter 'json_schema'.*{match}"):
        JsonSchemaConstraint(json_schema=schema).run()


def test_malformed_lark_grammar_is_a_located_node_error():
    pytest.importorskip("llguidance", reason="grammar constraints need llguidance (the lm extra)")
    from samplegraph.nodes.lm.constraints.lark import LarkConstraint

    with pytest.raises(NodeError, match=r"parameter 'grammar': 1\(14\)"):
        LarkConstraint(grammar='start: "a" (b').run()


def test_masked_json_samples_validate_and_an_unsatisfiable_grammar_stops_at_once():
    pytest.importorskip("llguidance", reason="grammar constraints need llguidance (the lm extra)")
    jsonschema = pytest.importorskip("jsonschema", reason="the test extra provides jsonschema")
    from samplegraph.nodes.lm.constraints.json_schema import JsonSchemaConstraint
    from samplegraph.nodes.lm.constraints.lark import LarkConstraint

    logits = torch.zeros(JSON_VOCAB.size, JSON_VOCAB.size)
    for c in (b"}", b'"}', b'1}', b'"', b'",', b"1"):  # an LM that likes to close things
        logits[:, JSON_VOCAB.id_of(c)] = 3.0
    logits[:, 0] = 4.0
    lm = MarkovLM(JSON_VOCAB, logits, bos=1)
    gen = Masked(particles=12, max_new_tokens=30).run(lm, Prompts(("",)), JsonSchemaConstraint(json_schema=PERSON).run(),
                                                      NodeContext.detached(seed=0))
    assert gen.finished.all()
    for text in gen.texts:
        jsonschema.validate(json.loads(text), PERSON)
    with pytest.raises(NodeError, match="rejects every token of row 0 .* after 0 generated tokens"):
        Masked(particles=2, max_new_tokens=4).run(lm, Prompts(("",)), LarkConstraint(grammar='start: "zz"').run(),
                                                  NodeContext.detached(seed=0))


# ---------------------------------------------------------------- lexicon and a user's predicate plugin


@pytest.mark.parametrize("separator", [None, " ", "é-"])
def test_lexicon_matches_brute_force(separator):
    from samplegraph.nodes.lm.constraints.lexicon import LexiconConstraint

    words = ["a", "ab", "ba", "é", "a b"]
    potential = LexiconConstraint(words=words, separator=separator).run()
    sep = (separator or "").encode()
    if separator is None:
        language = {w.encode() for w in words}
    else:
        language = {sep.join(w.encode() for w in seq) for n in (1, 2, 3) for seq in itertools.product(words, repeat=n)}
    alphabet = b"ab -" + E_ACUTE
    strings = [bytes(s) for n in range(5) for s in itertools.product(alphabet, repeat=n)]
    prefixes = {t[:i] for t in language for i in range(len(t) + 1)}
    assert potential.complete(strings).eq(0).tolist() == [s in language for s in strings]
    assert potential.prefix(strings).eq(0).tolist() == [s in prefixes for s in strings]


def test_empty_word_is_a_node_error():
    from samplegraph.nodes.lm.constraints.lexicon import LexiconConstraint

    with pytest.raises(NodeError, match="parameter 'words'"):
        LexiconConstraint(words=["a", ""]).run()


PLUGIN = '''
from samplegraph import node
from samplegraph.nodes.lm.constraints.predicate import BytePredicateConstraint


@node("constraint.balanced", version=1)
class Balanced(BytePredicateConstraint):
    """Balanced parentheses, at most `depth` deep (a user's own byte predicate)."""

    depth: int = 2

    def is_prefix(self, text: bytes) -> bool:
        level = 0
        for b in text:
            level += {40: 1, 41: -1}.get(b, 0)
            if level < 0 or level > self.depth:
                return False
        return True

    def is_complete(self, text: bytes) -> bool:
        return self.is_prefix(text) and text.count(b"(") == text.count(b")")
'''


def test_a_users_byte_predicate_registers_through_the_entry_point_and_constrains_decoding(tmp_path, monkeypatch):
    from samplegraph import Registry

    module = f"sg_balanced_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{module}.py").write_text(PLUGIN)
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[samplegraph.nodes]\nbalanced = {module}:Balanced\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry.default()
    assert "constraint.balanced" in registry
    potential = registry.node_class("constraint.balanced")(depth=1).run()
    vocab = Vocabulary(tokens=(b"", b"<s>", b"(", b")", b"()", b"x", b")("), eos=frozenset({0}))
    logits = torch.zeros(vocab.size, vocab.size)
    logits[:, 1] = -math.inf
    lm = MarkovLM(vocab, logits, bos=1)
    gen = Masked(particles=40, max_new_tokens=6).run(lm, Prompts(("",)), potential, NodeContext.detached(seed=2))
    for ids in gen.token_ids:
        text = vocab.decode(ids)
        assert potential.prefix([text])[0] == 0
        if ids[-1] in vocab.eos:
            assert text.count(b"(") == text.count(b")") and b"((" not in text
