"""The grammar's exact probabilities (sub-language masses, sampler frequencies, entropy) and
model.char_lm: its KV cache equals recomputation (rows of different lengths, windows, truncation,
gathers, reuse of a state), its fit to the grammar, and the shipped weights' reproducibility."""
from __future__ import annotations

import calendar
import datetime
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from scipy.stats import chi2

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.lm.char_lm import BOS, EOS, WEIGHTS, CharLM, ModelCharLM, load_char_lm
from samplegraph.nodes.lm.draws import categorical
from samplegraph.nodes.lm.grammar import corpus
from samplegraph.nodes.lm.grammar.corpus import CENTURY, KINDS, number
from samplegraph.nodes.lm.grammar.pcfg import Uniforms, derivations, logprob, sample
from samplegraph.nodes.lm.state import TokenState

ROOT = Path(__file__).resolve().parents[1]
LANG = corpus()


def training_script():
    spec = importlib.util.spec_from_file_location("train_char_lm", ROOT / "training" / "train_char_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lm() -> CharLM:
    return load_char_lm()


# --- the grammar -------------------------------------------------------------------------------

def test_every_date_of_a_year_sums_to_the_year_mass():
    """All 365 calendar dates of 2023, listed by datetime (not by the grammar), carry P(date) P(year 2023)."""
    days = [datetime.date(2023, 1, 1) + datetime.timedelta(d) for d in range(365)]
    total = math.fsum(math.exp(LANG.logprob(d.isoformat().encode())) for d in days)
    assert total == pytest.approx(KINDS["date"] * CENTURY["20"] * 0.1 * 0.1, rel=1e-12)
    assert calendar.isleap(2024) and LANG.logprob(b"2024-02-29") == -math.inf  # February has 28 days here
    for bad in (b"2023-02-30", b"2023-13-01", b"1800-01-01", b"2023-1-01"):
        assert LANG.logprob(bad) == -math.inf, bad


def test_a_finite_sub_language_has_mass_one_and_each_string_one_derivation():
    num = number()
    table = {}
    for text, p in derivations(num):
        table[text] = table.get(text, 0.0) + p
    assert len(table) == 1000 and set(table) == {str(i).encode() for i in range(1000)}  # 0..999, no leading 0
    assert math.fsum(table.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(logprob(num, t) == pytest.approx(math.log(p), abs=1e-12) for t, p in table.items())
    assert logprob(num, b"01") == -math.inf and logprob(num, b"1000") == -math.inf


@pytest.mark.parametrize("bad", [b"", b"1+", b"(1+2", b"((1))", b"1+(2)", b'{"name": "ada",}', b"name=al", b"id=1;",
                                 b'{"age": 1, "name": "ada"}', b"{}", b'{"tags": ["ada", "bob", "eve"]}'])
def test_strings_outside_the_language_have_probability_zero(bad):
    assert LANG.logprob(bad) == -math.inf


def test_sampled_frequencies_and_entropy_match_the_exact_probabilities():
    """20000 draws: chi-square over every string of probability >= 5e-4 plus the rest (p-value > 1e-3);
    the derivation's probability is the string's (unambiguous); mean -log p within 5 s.e. of H."""
    n = 20000
    u = Uniforms(torch.Generator().manual_seed(3))
    draws = [sample(LANG.start, u) for _ in range(n)]
    lp = {d.text: LANG.logprob(d.text) for d in draws}
    assert all(d.logprob == pytest.approx(lp[d.text], abs=1e-9) for d in draws)
    cells = sorted(t for t, v in lp.items() if math.exp(v) >= 5e-4)
    counts = {t: 0 for t in cells}
    for d in draws:
        if d.text in counts:
            counts[d.text] += 1
    expected = [n * math.exp(lp[t]) for t in cells]
    observed = [counts[t] for t in cells]
    expected.append(n - sum(expected))
    observed.append(n - sum(observed))
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    assert len(cells) >= 20 and chi2.sf(stat, len(cells)) > 1e-3, (len(cells), stat)
    nll = torch.tensor([-lp[d.text] for d in draws], dtype=torch.float64)
    se = float(nll.std()) / math.sqrt(n)
    assert abs(float(nll.mean()) - LANG.stats().entropy) < 5 * se, (float(nll.mean()), LANG.stats().entropy, se)


def test_the_language_fits_the_shipped_context():
    st = LANG.stats()
    assert st.max_length + 2 <= load_char_lm().max_length  # BOS, the longest string, EOS
    assert 0 < LANG.entropy_per_char() < math.log(len(LANG.alphabet()) + 1)


# --- the KV cache --------------------------------------------------------------------------------

PROMPTS = ["", "2023-", '{"name', "id=1;ok="]


def fresh(lm: CharLM, state: TokenState, window: int = 1) -> torch.Tensor:
    """next_logprobs recomputed from the whole prefix (no cache)."""
    return lm.next_logprobs(state.replace(cache=None, cached=torch.zeros_like(state.cached)), window)[0]


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    assert a.shape == b.shape and torch.equal(torch.isinf(a), torch.isinf(b))
    finite = torch.isfinite(a)
    assert float((a[finite] - b[finite]).abs().max()) <= tol


def draw(logp: torch.Tensor, state: TokenState, seed: int = 0) -> torch.Tensor:
    """(B,) tokens drawn from the last distributions (B, W, V), keyed by particle and position."""
    return categorical(NoiseSource(seed), logp[:, -1], state.particle, state.position)


def run_steps(lm: CharLM, state: TokenState, steps: int, check: bool = True) -> tuple[TokenState, torch.Tensor]:
    """Decode `steps` tokens with the cache, comparing every distribution with a fresh computation."""
    for _ in range(steps):
        logp, state = lm.next_logprobs(state)
        if check:
            assert_close(logp, fresh(lm, state))
            assert_close(torch.logsumexp(logp, -1), torch.zeros(logp.shape[:2]))
            assert (logp[..., BOS] == -math.inf).all()
        tok = draw(logp, state)
        state = state.append(tok, eos=tok == EOS)
    return state, logp


def test_cached_logprobs_equal_recomputation_for_rows_of_different_lengths(lm):
    state = lm.start([lm.encode(p) for p in PROMPTS], torch.arange(4), 30)
    assert state.length.tolist() == [1, 6, 7, 9]
    run_steps(lm, state, 12)


def test_a_window_equals_single_steps(lm):
    state = lm.start([lm.encode(p) for p in PROMPTS], torch.arange(4), 30)
    logp, state = lm.next_logprobs(state)
    singles, k = [logp[:, -1]], 5
    ahead = state
    for _ in range(k):  # k single steps from `state`
        ahead = ahead.append(draw(logp, ahead))
        logp, ahead = lm.next_logprobs(ahead)
        singles.append(logp[:, -1])
    drafted = state.replace(tokens=ahead.tokens, length=ahead.length)  # the k tokens appended, not yet seen
    window, after = lm.next_logprobs(drafted, window=k + 1)
    assert_close(window, torch.stack(singles, 1))
    assert_close(window, fresh(lm, drafted, k + 1))
    assert torch.equal(after.cached, after.length)


def test_continuing_after_truncate_equals_a_fresh_computation(lm):
    state = lm.start([lm.encode(p) for p in PROMPTS], torch.arange(4), 30)
    state, _ = run_steps(lm, state, 8, check=False)
    kept = state.length - torch.tensor([1, 4, 0, 7])
    cut = state.truncate(kept)
    assert_close(lm.next_logprobs(cut)[0], fresh(lm, cut))
    # speculative rejections: cut, append a different token, continue (no call in between)
    other = (state.tokens.gather(1, kept[:, None])[:, 0] + 1) % lm.vocab.size
    replaced = state.truncate(kept).append(torch.where(other == BOS, other + 1, other))
    run_steps(lm, replaced, 4)
    run_steps(lm, state, 3)  # the untruncated state still holds its own cache


def test_gathered_rows_continue_like_those_rows_from_scratch(lm):
    state = lm.start([lm.encode(p) for p in PROMPTS], torch.arange(4), 30)
    state, _ = run_steps(lm, state, 5, check=False)
    idx = torch.tensor([2, 0, 2, 3, 3, 1])
    picked = state[idx]
    assert picked.cache.keys[0].shape[0] == 6
    run_steps(lm, picked.replace(particle=torch.arange(6)), 6)


def test_one_state_continued_twice_gives_both_continuations(lm):
    state = lm.start([lm.encode(p) for p in PROMPTS], torch.arange(4), 30)
    logp, state = lm.next_logprobs(state)
    first = lm.next_logprobs(state.append(torch.full((4,), 5)))[1]
    second = state.append(torch.full((4,), 9))
    assert_close(lm.next_logprobs(second)[0], fresh(lm, second))
    third = first.append(torch.full((4,), 3))
    assert_close(lm.next_logprobs(third)[0], fresh(lm, third))


def test_another_models_cache_is_never_read(lm):
    other = load_char_lm()
    with torch.no_grad():
        for p in other.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    state = lm.start([lm.encode(p) for p in PROMPTS], torch.arange(4), 30)
    ours, state = lm.next_logprobs(state)
    theirs, _ = other.next_logprobs(state)
    assert_close(theirs, fresh(other, state))
    assert float((theirs - ours)[torch.isfinite(ours)].abs().max()) > 1e-2


def test_the_node_gives_the_shipped_model_with_bos_prompts():
    lm = ModelCharLM().run()
    assert isinstance(lm, CharLM) and lm.vocab.eos == frozenset({EOS}) and lm.vocab.size == 2 + len(LANG.alphabet())
    ids = lm.encode('{"age": 42}')
    assert ids[0] == BOS and lm.vocab.decode(ids) == b'{"age": 42}' and lm.encode("") == [BOS]


def test_bad_inputs_are_located_errors(lm, tmp_path):
    with pytest.raises(NodeError, match="outside the model's alphabet"):
        lm.encode("hello!")
    state = lm.start([lm.encode("")], torch.arange(1), 4)
    with pytest.raises(NodeError, match="window=2"):
        lm.next_logprobs(state, window=2)
    with pytest.raises(NodeError, match="exceeds the model's context"):
        lm.start([lm.encode("")], torch.arange(1), lm.max_length)
    with pytest.raises(NodeError, match="does not exist"):
        ModelCharLM(weights=str(tmp_path / "none.safetensors")).run()
    (tmp_path / "pickled.pt").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(NodeError, match="not a readable safetensors file"):
        ModelCharLM(weights=str(tmp_path / "pickled.pt")).run()


# --- the fit and the shipped weights -------------------------------------------------------------

def ancestral(lm: CharLM, n: int, seed: int, prompts: list[str] | None = None,
              particle: list[int] | None = None) -> tuple[list[bytes], torch.Tensor]:
    """Texts drawn after each prompt (default n empty prompts) with draws.categorical (a plain decoding
    loop), and their model log-probs."""
    prompts = [""] * n if prompts is None else prompts
    particle = torch.arange(len(prompts)) if particle is None else torch.tensor(particle)
    state = lm.start([lm.encode(p) for p in prompts], particle, LANG.stats().max_length + 1)
    noise = NoiseSource(seed)
    while not bool(state.done.all()):
        logp, state = lm.next_logprobs(state)
        tok = categorical(noise, logp[:, -1], state.particle, state.position)
        state = state.append(tok, logp=logp[:, -1].gather(1, tok[:, None])[:, 0], eos=tok == EOS)
    return [lm.vocab.decode(state.generated(i)) for i in range(state.batch)], state.logp


def test_generated_texts_do_not_depend_on_the_batch_split(lm):
    prompts = ["", "2023-", '{"name', "id=1;ok=", "(", "", "19", "{"]
    texts, logp = ancestral(lm, 8, seed=7, prompts=prompts)
    order = [7, 5, 3, 1, 6, 4, 2, 0]
    parts = [ancestral(lm, 4, seed=7, prompts=[prompts[i] for i in half], particle=half)
             for half in (order[:4], order[4:])]
    split_texts = [t for p in parts for t in p[0]]
    split_logp = torch.cat([p[1] for p in parts])
    assert [texts[i] for i in order] == split_texts
    assert torch.allclose(logp[order], split_logp, atol=1e-5)  # float32 sums differ in the last bits by batch


def test_ancestral_samples_are_mostly_in_the_language_with_grammar_like_probabilities(lm):
    """1000 draws from BOS: >= 90% in the language (measured 95-96%, see training/train_char_lm.py), their
    mean exact grammar log-prob within 1 nat of -H (measured -11.7 vs -12.17)."""
    texts, model_logp = ancestral(lm, 1000, seed=0)
    grammar = torch.tensor([LANG.logprob(t) for t in texts], dtype=torch.float64)
    valid = torch.isfinite(grammar)
    assert float(valid.double().mean()) >= 0.9
    mean_valid = float(grammar[valid].mean())
    assert abs(mean_valid + LANG.stats().entropy) < 1.0, (mean_valid, -LANG.stats().entropy)
    # the model's log-probs of its own valid samples are close to the grammar's
    assert float((model_logp[valid] - grammar[valid]).abs().mean()) < 1.0


def test_the_shipped_weights_reproduce_the_training_scripts_heldout_loss(lm):
    with safe_open(str(WEIGHTS), framework="pt") as f:
        recorded = json.loads(f.metadata()["training"])
    script = training_script()
    strings = script.heldout_strings(LANG)
    assert script.heldout_loss(lm.net, strings) == pytest.approx(recorded["heldout_ce"], abs=1e-5)
    assert WEIGHTS.stat().st_size < 500_000
    # the cached decoding path scores strings as the training forward does
    some = strings[:50]
    assert teacher_forced_nll(lm, some) == pytest.approx(script.heldout_loss(lm.net, some), abs=1e-5)


def teacher_forced_nll(lm: CharLM, strings: list[bytes]) -> float:
    """Per-token NLL of BOS s EOS, one cached next_logprobs call per position."""
    rows = [lm.encode(s.decode())[1:] + [EOS] for s in strings]
    state = lm.start([[BOS]] * len(rows), torch.arange(len(rows)), max(map(len, rows)))
    total = 0.0
    for t in range(max(map(len, rows))):
        logp, state = lm.next_logprobs(state)
        tok = torch.tensor([r[min(t, len(r) - 1)] for r in rows])
        live = ~state.done
        total -= float(logp[:, -1].gather(1, tok[:, None])[:, 0][live].double().sum())
        state = state.append(tok, eos=tok == EOS)
    return total / sum(map(len, rows))


def test_training_is_deterministic():
    script = training_script()
    config = script.default_config(LANG).model_copy(update={"d_model": 32, "layers": 1})
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        (a, la), (b, lb) = script.train(config, 4), script.train(config, 4)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    assert la == lb and la[-1] < la[0]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_generate_workflow_writes_grammar_strings(tmp_path):
    """workflows/lm_char_generate.json: 16 ancestral samples per prompt (BOS alone, and a JSON object's start)."""
    from samplegraph.runtime.api import Runtime

    result = Runtime(cache=False).run(ROOT / "workflows" / "lm_char_generate.json", out_dir=tmp_path)
    gen = result["generate"]
    prompts = ["", '{"name": "']
    texts = [prompts[g] + t for g, t in zip(gen.group.tolist(), gen.texts)]
    valid = [LANG.logprob(t.encode()) > -math.inf for t in texts]
    assert len(texts) == 32 and bool(gen.finished.all()) and sum(valid) >= 28, texts
    assert all(t.startswith('{"name": "') for t, g in zip(texts, gen.group.tolist()) if g == 1)
    assert len((tmp_path / "texts.jsonl").read_text().splitlines()) == 32
