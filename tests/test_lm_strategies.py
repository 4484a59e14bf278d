"""Token strategies on model.table_lm: lm.generate's string distribution equals the enumerated one;
greedy follows the argmax path; exhaustive beam search returns every sequence with its exact log p;
draws do not depend on the batch split or particle order; the model cache travels with gathered rows;
best-of-N ranks lm.generate's own samples; the workflow runs through the embedding API (overrides,
progress per token, cancellation between tokens) and saves JSONL."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from samplegraph import CancelToken, RunCancelled, Runtime
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.lm.beam import Beam
from samplegraph.nodes.lm.best_of_n import BestOfN
from samplegraph.nodes.lm.common import TokenBudget, start_rows
from samplegraph.nodes.lm.decoding import decode
from samplegraph.nodes.lm.exact import enumerate_sequences, text_distribution, total_variation
from samplegraph.nodes.lm.generate import Generate, ancestral
from samplegraph.nodes.lm.generations import Generations
from samplegraph.nodes.lm.greedy import Greedy
from samplegraph.nodes.lm.model import LanguageModel
from samplegraph.nodes.lm.potential import Potential
from samplegraph.nodes.lm.prompt import Prompts
from samplegraph.nodes.lm.state import ModelCache, TokenState
from samplegraph.nodes.lm.table_lm import ModelTableLM
from samplegraph.nodes.lm.transforms.temperature import Temperature
from samplegraph.runtime.events import NodeStarted, StepProgress

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "lm_generate.json"
MARKOV = dict(tokens=["a", "bc", "é"], start=[1, 1, 1, 1],
              transitions=[[0, 5, 2, 1], [3, 1, 0, 1], [1, 4, 2, 3]])


def table() -> LanguageModel:
    return ModelTableLM(**MARKOV).run()


class History(ModelCache):
    """A cache that remembers the tokens each row has fed the model."""

    def __init__(self, seen: list[tuple[int, ...]]):
        self.seen = seen

    def select(self, idx: torch.Tensor) -> History:
        return History([self.seen[i] for i in idx.tolist()])


class CachedLM(LanguageModel):
    """`inner` with a cache that must always match its row: a row gathered without its cache (or with
    another row's) fails here, as it would silently corrupt a real KV cache."""

    def __init__(self, inner: LanguageModel):
        self.inner, self.vocab, self.max_length = inner, inner.vocab, inner.max_length

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def next_logprobs(self, state: TokenState, window: int = 1):
        seen = state.cache.seen if state.cache is not None else [()] * state.batch
        for i in range(state.batch):
            row = tuple(state.row(i))
            assert len(seen[i]) == int(state.cached[i]) and row[:len(seen[i])] == seen[i], "cache of another row"
        logp, state = self.inner.next_logprobs(state, window)
        return logp, state.replace(cache=History([tuple(state.row(i)) for i in range(state.batch)]),
                                   cached=state.length.clone())


def expected_tv(p: dict, n: int) -> float:
    """E[TV] of an n-sample empirical distribution to p (normal approximation: E|X| = sigma sqrt(2/pi))."""
    return 0.5 * sum(math.sqrt(q * (1 - q) / n) * math.sqrt(2 / math.pi) for q in p.values())


def sampled_texts(gens: Generations, group: int) -> dict[bytes, float]:
    texts = [t.encode() for t, g in zip(gens.texts, gens.group.tolist()) if g == group]
    return {t: texts.count(t) / len(texts) for t in set(texts)}


def test_generate_matches_the_exact_text_distribution_of_each_prompt():
    """N = 20000 per prompt, 5 tokens: TV to the enumerated text distribution (unfinished texts included)
    below 1.5x the TV exact samples of that size have on average (~0.03); temperature 1.5 lies over 2x it away."""
    lm, n, new = table(), 20000, 5
    gens = Generate(max_new_tokens=new, particles=n).run(lm, Prompts(("a", "é")), NodeContext.detached(seed=1))
    for g, prompt in enumerate(["a", "é"]):
        exact = text_distribution(lm, enumerate_sequences(lm, lm.encode(prompt), new), finished_only=False)
        tol = 1.5 * expected_tv(exact, n)
        assert total_variation(sampled_texts(gens, g), exact) < tol
        hot = Temperature(lm, 1.5)
        wrong = text_distribution(hot, enumerate_sequences(hot, lm.encode(prompt), new), finished_only=False)
        assert total_variation(wrong, exact) > 2 * tol


def test_generate_reports_its_budget_and_ends_rows_at_eos_or_the_token_limit():
    lm, ctx = table(), NodeContext.detached(seed=0)
    gens = Generate(max_new_tokens=3, particles=50).run(lm, Prompts(("a",)), ctx)
    lengths = [len(ids) for ids in gens.token_ids]
    assert max(lengths) <= 3 and ctx.metrics["tokens_generated"] == sum(lengths)
    assert ctx.metrics["lm_calls"] == 3 and ctx.metrics["lm_rows"] == sum(lengths)  # finished rows leave the batch
    ends = [bool(ids) and ids[-1] == lm.eos_id for ids in gens.token_ids]
    assert gens.finished.tolist() == ends and all(e or k == 3 for e, k in zip(ends, lengths))
    assert (gens.log_weight == 0).all()


def test_the_same_seed_gives_the_same_texts_whatever_the_split_or_order():
    lm, seed = table(), 5
    whole = Generate(max_new_tokens=6, particles=8).run(lm, Prompts(("a",)), NodeContext.detached(seed=seed))
    split = Generate(max_new_tokens=6, particles=4).run(lm, Prompts(("a", "a")), NodeContext.detached(seed=seed))
    assert split.token_ids == whole.token_ids and split.group.tolist() == [0] * 4 + [1] * 4
    state, group, _ = start_rows(lm, Prompts(("a",)), 8, 6)
    noise = NodeContext.detached(seed=seed).noise

    def run(rows: list[int]) -> list[tuple[int, ...]]:
        out = decode(lm, state[rows], group[rows], ancestral(noise), 6, TokenBudget(1))
        return [tuple(out.generated(i)) for i in range(out.batch)]

    perm = [5, 2, 7, 0, 3, 1, 6, 4]
    assert run(perm) == [whole.token_ids[i] for i in perm]
    assert run([0, 1, 2]) + run([3, 4, 5, 6, 7]) == list(whole.token_ids)
    other = Generate(max_new_tokens=6, particles=8).run(lm, Prompts(("a",)), NodeContext.detached(seed=seed + 1))
    assert other.token_ids != whole.token_ids


@pytest.mark.parametrize("strategy", [Generate(max_new_tokens=6, particles=16), Greedy(max_new_tokens=6),
                                      Beam(width=5, particles=3, max_new_tokens=6)], ids=["generate", "greedy", "beam"])
def test_the_model_cache_travels_with_every_gathered_row(strategy):
    """Through a model whose cache must match its row, each strategy gives exactly the uncached texts."""
    lm, prompts = table(), Prompts(("a", "bcé"))
    plain = strategy.run(lm, prompts, NodeContext.detached(seed=2))
    cached = strategy.run(CachedLM(lm), prompts, NodeContext.detached(seed=2))
    assert cached.rows() == plain.rows()


def test_greedy_follows_the_argmax_path():
    lm = table()
    gens = Greedy(max_new_tokens=6, particles=2).run(lm, Prompts(("é", "bc")), NodeContext.detached())
    for g, prompt in enumerate(["é", "bc"]):
        last, path = lm.encode(prompt)[-1], []
        while len(path) < 6 and last != lm.eos_id:
            last = int(lm.table[last].argmax())
            path.append(last)
        assert gens.token_ids[2 * g] == gens.token_ids[2 * g + 1] == tuple(path)


def test_exhaustive_beam_search_returns_every_sequence_with_its_exact_log_probability():
    """width >= the number of sequences: beam search is exhaustive, so its pool is enumerate_sequences' output."""
    lm, new = table(), 4
    gens = Beam(width=128, particles=128, max_new_tokens=new).run(lm, Prompts(("a", "é")), NodeContext.detached())
    for g, prompt in enumerate(["a", "é"]):
        exact = enumerate_sequences(lm, lm.encode(prompt), new)
        got = {ids: w for ids, w, gg in zip(gens.token_ids, gens.log_weight.tolist(), gens.group.tolist()) if gg == g}
        assert set(got) == set(exact) and len(exact) < 128
        assert max(abs(got[s] - exact[s]) for s in exact) < 1e-12
        weights = [w for w, gg in zip(gens.log_weight.tolist(), gens.group.tolist()) if gg == g]
        assert weights == sorted(weights, reverse=True)  # best first


TRAP = dict(tokens=["a", "b"], start=[6, 4, 0], transitions=[[34, 33, 33], [0, 0, 1]])


def test_beam_finds_the_most_probable_sequence_greedy_misses():
    """p(a ...) <= 0.6 * 0.34 but p(b EOS) = 0.4: greedy starts with 'a'; width 2 finds 'b'."""
    lm = ModelTableLM(**TRAP).run()
    brute = enumerate_sequences(lm, lm.encode(""), 3)
    best = max(brute, key=brute.get)
    assert best == (1, lm.eos_id)
    greedy = Greedy(max_new_tokens=3).run(lm, Prompts(("",)), NodeContext.detached())
    assert greedy.token_ids[0][0] == 0
    beam = Beam(width=2, particles=2, max_new_tokens=3).run(lm, Prompts(("",)), NodeContext.detached())
    assert beam.token_ids[0] == best and beam.log_weight[0].item() == pytest.approx(brute[best], abs=1e-12)
    assert beam.finished[0] and beam.log_weight[0] >= beam.log_weight[1]


def test_beam_particles_cannot_exceed_its_width():
    with pytest.raises(ValidationError, match="cannot exceed width"):
        Beam(width=2, particles=3)


class CountOf(Potential):
    """Reward: log-weight = how many times `byte` occurs in the complete text."""

    def __init__(self, byte: bytes):
        self.byte = byte

    def prefix(self, texts):
        return torch.zeros(len(texts), dtype=torch.float64)

    def complete(self, texts):
        return torch.tensor([float(t.count(self.byte)) for t in texts], dtype=torch.float64)


def test_best_of_n_ranks_the_samples_lm_generate_draws():
    lm, seed, ctx = table(), 4, NodeContext.detached(seed=4)
    prompts = Prompts(("a", "é"))
    plain = Generate(max_new_tokens=5, particles=8).run(lm, prompts, NodeContext.detached(seed=seed))
    every = BestOfN(max_new_tokens=5, particles=8, keep="all").run(lm, prompts, CountOf(b"a"), ctx)
    assert every.token_ids == plain.token_ids
    reward = torch.tensor([float(t.count("a")) for t in plain.texts], dtype=torch.float64)
    assert torch.equal(every.log_weight, reward)
    best = BestOfN(max_new_tokens=5, particles=8).run(lm, prompts, CountOf(b"a"), NodeContext.detached(seed=seed))
    for g in range(2):
        i = int(reward[8 * g:8 * g + 8].argmax()) + 8 * g
        assert best.token_ids[g] == plain.token_ids[i] and best.log_weight[g] == reward[i]
    assert best.group.tolist() == [0, 1] and reward.max() > reward.min()
    assert ctx.metrics["reward_evaluations"] == 16 and ctx.metrics["best_reward_mean"] >= ctx.metrics["reward_mean"]


def test_a_prompt_longer_than_the_context_is_a_node_error():
    lm = ModelTableLM(**MARKOV, max_length=8).run()
    with pytest.raises(NodeError, match="exceeds the model's context"):
        Generate(max_new_tokens=4).run(lm, Prompts(("abcabc",)), NodeContext.detached())


# ---------------------------------------------------------------- through the runtime


def test_the_workflow_runs_with_a_prompt_override_and_saves_jsonl(tmp_path):
    rt = Runtime(device="cpu", cache=False)
    events: list = []
    result = rt.run(WORKFLOW, overrides={"prompt.text": "the dog "}, out_dir=tmp_path, on_event=events.append)
    gens = result["generate"]
    assert isinstance(gens, Generations) and len(gens) == 8
    assert all(t.startswith(("sat", "ran")) for t in gens.texts) and gens.log_weight.tolist() == [0.0] * 8
    rows = [json.loads(line) for line in (tmp_path / "texts.jsonl").read_text().splitlines()]
    assert rows == gens.rows() and result["save"] == str((tmp_path / "texts.jsonl").resolve())
    steps = [e for e in events if isinstance(e, StepProgress) and e.node == "generate"]
    assert [e.step for e in steps] == list(range(1, len(steps) + 1)) and steps[0].total == 24
    longest = max(len(ids) for ids in gens.token_ids)
    assert len(steps) == longest  # one event per token step, the loop ends when every row has
    report = json.loads((tmp_path / "report.json").read_text())
    metrics = {n["node"]: n.get("metrics", {}) for n in report["nodes"]}["generate"]
    assert metrics["tokens_generated"] == sum(len(ids) for ids in gens.token_ids)
    assert metrics["lm_calls"] == longest


def test_the_same_workflow_and_seed_give_the_same_texts_and_another_seed_others():
    rt = Runtime(device="cpu", cache=False)
    a = rt.run(WORKFLOW, outputs=["generate"])["generate"]
    b = rt.run(WORKFLOW, outputs=["generate"])["generate"]
    c = rt.run(WORKFLOW, outputs=["generate"], seed=7)["generate"]
    assert a.rows() == b.rows() and a.texts != c.texts


def test_cancelling_from_a_progress_callback_stops_between_tokens(tmp_path):
    rt, token = Runtime(device="cpu", cache=False), CancelToken()
    events: list = []

    def on_event(event) -> None:
        events.append(event)
        if isinstance(event, StepProgress) and event.node == "generate" and event.step == 2:
            token.cancel()

    with pytest.raises(RunCancelled, match="'generate'"):
        rt.run(WORKFLOW, overrides={"generate.max_new_tokens": 1000, "model.max_length": 2000}, cancel=token,
               on_event=on_event, out_dir=tmp_path)
    steps = [e.step for e in events if isinstance(e, StepProgress) and e.node == "generate"]
    assert steps == [1, 2] and any(isinstance(e, NodeStarted) and e.node == "generate" for e in events)
    assert not (tmp_path / "texts.jsonl").exists()


def test_generations_come_back_from_the_disk_cache(tmp_path):
    first = Runtime(device="cpu", cache_dir=tmp_path / "cache").run(WORKFLOW, outputs=["generate"])
    second = Runtime(device="cpu", cache_dir=tmp_path / "cache").run(WORKFLOW, outputs=["generate"])
    assert {n.node: n.cache for n in second.report.nodes}["generate"] == "disk"
    assert second["generate"].rows() == first["generate"].rows()


def test_the_cli_prints_a_summary_of_each_text(tmp_path):
    from samplegraph.runtime.cli import show_output

    gens = Generate(max_new_tokens=4, particles=12).run(table(), Prompts(("a",)), NodeContext.detached(seed=0))
    lines = show_output(gens).splitlines()
    assert lines[0] == f"12 texts (1 prompt, {int(gens.finished.sum())} finished)" and len(lines) == 12
    assert lines[1].startswith("  [0] group 0  log_w 0  ") and json.dumps(gens.texts[0], ensure_ascii=False) in lines[1]
    assert lines[-1] == "  ... 2 more"
