"""Discrete-diffusion benchmarks (issue 11): sample quality against compute for every sampler on the
trained masked diffusion LM (model.mdm), beside the autoregressive character LM (model.char_lm) at equal
compute, and the float32 categorical-sampling bug of Zheng et al. (2024).

    python benchmarks/discrete.py [--samples 256] [--sections quality precision] [--out DIR]

quality: for each sampler and step count, N samples of L = the model's length from all-masked; per
    sample, denoiser evaluations (rows the network ran, over N) and positions processed (evaluations x L);
    generative perplexity under the char LM (exp of the pooled NLL per token, EOS included), mean
    per-sample unigram entropy (diversity), validity under the corpus grammar (the corpus is synthetic,
    so validity and log-likelihood are exact), mean exact grammar log-likelihood of the valid samples, and
    the distinct fraction. The char LM row: ancestral sampling, one forward pass per token with a KV cache
    (its per-sample evaluations are the tokens it generated; each processes one position). The corpus's
    own strings are the reference row. Plots: perplexity and entropy against evaluations per sample.
precision: (i) the trained model, ancestral (MDLM's race) with many steps, float32 vs float64 draws;
    (ii) one position over a Zipf distribution on V tokens (a GPT-2-sized tail), ancestral over S steps:
    the mean log-probability of the drawn token (an unbiased estimate of -entropy for exact draws) and
    the share of tail tokens, float32 vs float64, against the exact values. The effect needs per-step
    token probabilities below float32's 2^-24 resolution relative to staying masked (tests/
    test_discrete_samplers.py integrates it exactly): large vocabularies and many steps.

All draws come from the counter-based NoiseSource (seeded), one torch thread. Writes
benchmarks/results/discrete_<section>.md and discrete_*.png."""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from charts import line_chart
from common import table
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.discrete.denoiser import CountingDiscreteDenoiser, DiscreteDenoiser
from samplegraph.nodes.discrete.draws import categorical
from samplegraph.nodes.discrete.mdm import load_mdm
from samplegraph.nodes.discrete.sampler import DiscreteSampler, run_discrete
from samplegraph.nodes.discrete.samplers.ancestral import Ancestral
from samplegraph.nodes.discrete.samplers.coherent import Coherent
from samplegraph.nodes.discrete.samplers.confidence import Confidence
from samplegraph.nodes.discrete.samplers.first_hitting import FirstHitting
from samplegraph.nodes.discrete.samplers.remdm import ReMDM
from samplegraph.nodes.discrete.samplers.tau_leaping import TauLeaping
from samplegraph.nodes.discrete.samples import DiscreteSamples
from samplegraph.nodes.discrete.schedules.linear import LinearSchedule
from samplegraph.nodes.discrete.template import DiscreteTemplate
from samplegraph.nodes.lm.char_lm import load_char_lm
from samplegraph.nodes.lm.generate import Generate
from samplegraph.nodes.lm.grammar import corpus
from samplegraph.nodes.lm.prompt import Prompts
from samplegraph.nodes.metrics.text_scores import (distinct_fraction, grammar_logprobs, lm_nll, mean_entropy,
                                                   mean_valid_logprob, perplexity, valid_fraction)

ROOT = Path(__file__).resolve().parents[1]
SEED = 0


@dataclass
class Scored:
    """One row of the quality table."""

    method: str
    steps: int | str
    evals_per_sample: float
    positions_per_sample: float
    gen_ppl: float
    entropy: float
    valid: float
    valid_loglik: float
    distinct: float
    wall_s: float

    def row(self) -> list[object]:
        return [self.method, self.steps, round(self.evals_per_sample, 2), round(self.positions_per_sample),
                round(self.gen_ppl, 3), round(self.entropy, 3), f"{100 * self.valid:.1f}%",
                round(self.valid_loglik, 2), round(self.distinct, 3), round(self.wall_s, 2)]


HEADERS = ["method", "steps", "evaluations / sample", "positions / sample", "gen. perplexity (char LM)",
           "unigram entropy", "valid", "grammar log-lik (valid)", "distinct", "wall s"]


def score(method: str, steps: int | str, texts: list[str], evals: float, positions: float, wall: float,
          lm) -> Scored:
    lang = corpus()
    logp = grammar_logprobs(texts, lang)
    nll, tokens = lm_nll(lm, texts)
    return Scored(method, steps, evals, positions, perplexity(nll, tokens), mean_entropy(texts),
                  valid_fraction(logp), mean_valid_logprob(logp), distinct_fraction(texts), wall)


def sample_mdm(den: DiscreteDenoiser, sampler: DiscreteSampler, steps: int, n: int) -> tuple[list[str], float, float]:
    """Texts of n samples from all-masked, denoiser row-evaluations per sample, wall seconds."""
    counted = CountingDiscreteDenoiser(den)
    noise = NoiseSource(SEED)
    state, _, _ = DiscreteTemplate(length=den.length).run().start(counted, n, noise)
    start = time.perf_counter()
    state = run_discrete(sampler, counted, LinearSchedule(steps), state, noise)
    wall = time.perf_counter() - start
    return list(DiscreteSamples.of_state(state, counted).texts), counted.rows / n, wall


def mdm_samplers() -> list[tuple[str, Callable[[], DiscreteSampler], list[int]]]:
    """(name, sampler factory, step counts) of every sampler on the masked model."""
    grid = [8, 16, 32, 64, 128, 256]
    return [("ancestral (MDLM, x0 cache)", lambda: Ancestral(), grid),
            ("ancestral (no cache)", lambda: Ancestral(reuse_x0=False), grid),
            ("tau-leaping", lambda: TauLeaping(), grid),
            ("first-hitting", lambda: FirstHitting(), [1]),
            ("confidence top-k (T = 1)", lambda: Confidence(), grid),
            ("margin top-k (T = 1)", lambda: Confidence(score="margin"), grid),
            ("entropy top-k (T = 1)", lambda: Confidence(score="entropy"), grid),
            ("confidence, LLaDA blocks of 13", lambda: Confidence(block_length=13), [5, 10, 20, 40, 80, 160]),
            ("ReMDM cap eta 0.04", lambda: ReMDM(), grid),
            ("ReMDM rescale eta 0.5", lambda: ReMDM(strategy="rescale", eta=0.5), grid),
            ("CCD, history 2 (T = 1)", lambda: Coherent(consistency="off"), grid),
            ("CCD-DS, history 2 (T = 1)", lambda: Coherent(), grid),
            ("CCD, LLaDA blocks of 13", lambda: Coherent(consistency="off", block_length=13), [5, 10, 20, 40, 80, 160]),
            ("CCD-DS, LLaDA blocks of 13", lambda: Coherent(block_length=13), [5, 10, 20, 40, 80, 160])]


def section_quality(args: argparse.Namespace) -> str:
    den, lm = load_mdm(), load_char_lm()
    rows: list[Scored] = []
    for name, make, grid in mdm_samplers():
        if args.methods and not any(m in name for m in args.methods):
            continue
        for steps in grid:
            texts, evals, wall = sample_mdm(den, make(), steps, args.samples)
            rows.append(score(name, steps if len(grid) > 1 else "-", texts, evals, evals * den.length, wall, lm))
            print(table(HEADERS, [rows[-1].row()]).splitlines()[-1], flush=True)
    ctx = NodeContext.detached(seed=SEED)
    start = time.perf_counter()
    gen = Generate(max_new_tokens=den.length, particles=args.samples).run(lm, Prompts(("",)), ctx)
    wall = time.perf_counter() - start
    ar_tokens = sum(len(r) for r in gen.token_ids) / len(gen)
    rows.append(score("char LM, ancestral (KV cache)", "-", list(gen.texts), ar_tokens, ar_tokens, wall, lm))
    data = [s.decode() for s in corpus().sample(torch.Generator().manual_seed(SEED), args.samples)]
    rows.append(score("corpus strings (reference)", "-", data, 0.0, 0.0, 0.0, lm))
    plot_quality(rows, Path(args.out))
    head = (f"model.mdm (L = {den.length}), {args.samples} samples per row from all-masked, linear schedule, "
            f"float64 draws, seed {SEED}, torch threads {torch.get_num_threads()}")
    return head + "\n\n" + table(HEADERS, [r.row() for r in rows])


def plot_quality(rows: list[Scored], out: Path) -> None:
    ref = next(r for r in rows if r.method.startswith("corpus"))
    for metric, label in (("gen_ppl", "generative perplexity under the char LM"), ("entropy", "unigram entropy")):
        curves: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            if r.evals_per_sample > 0:
                curves.setdefault(r.method, []).append((r.evals_per_sample, getattr(r, metric)))
        line_chart(curves, out / f"discrete_{metric}.png", f"model.mdm: {label} vs denoiser evaluations per sample",
                   "network evaluations per sample", label, reference=("corpus strings", getattr(ref, metric)),
                   log_y=metric == "gen_ppl")


def rows_of_table(path: Path) -> list[Scored]:
    """The quality rows back from a written discrete_quality.md (to redraw the plots: --plot-only)."""
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(HEADERS) or cells[0] in ("method", "---") or set(cells[0]) <= {"-"}:
            continue
        num = [float(c.rstrip("%")) for c in cells[2:]]
        rows.append(Scored(cells[0], cells[1], num[0], num[1], num[2], num[3], num[4] / 100, num[5], num[6], num[7]))
    return rows


def zipf_logp(vocab: int, exponent: float) -> torch.Tensor:
    """(V,) float64 log-probabilities of a Zipf law p(k) ~ 1 / (k + 1)^exponent."""
    w = -exponent * torch.log(torch.arange(1, vocab + 1, dtype=torch.float64))
    return w - torch.logsumexp(w, 0)


def zipf_race(logp0: torch.Tensor, steps: int, rows: int, precision: str) -> torch.Tensor:
    """(rows,) tokens drawn at one masked position by MDLM's ancestral race over `steps` linear steps."""
    noise = NoiseSource(SEED)
    v = logp0.numel()
    token = torch.full((rows,), -1, dtype=torch.long)
    for k in range(steps):
        t, s = 1 - k / steps, 1 - (k + 1) / steps
        live = (token < 0).nonzero().flatten()
        if live.numel() == 0:
            break
        q = (t - s) / t  # P(unmask this step | masked), linear schedule
        logits = torch.cat([torch.full((1,), math.log1p(-q) if q < 1 else -math.inf, dtype=torch.float64),
                            math.log(q) + logp0])  # (V + 1,): stay masked, then the tokens
        draw = categorical(noise, logits.expand(live.numel(), 1, v + 1), live, k, 0, precision)[:, 0]
        hit = draw > 0
        token[live[hit]] = draw[hit] - 1
    return token


def section_precision(args: argparse.Namespace) -> str:
    out = []
    den, lm = load_mdm(), load_char_lm()
    rows = []
    for precision in ("float64", "float32"):
        texts, evals, wall = sample_mdm(den, Ancestral(precision=precision), args.precision_steps, args.samples)
        rows.append(score(f"ancestral, {precision} draws", args.precision_steps, texts, evals, evals * den.length,
                          wall, lm).row())
    out.append(f"(i) model.mdm, ancestral with {args.precision_steps} steps, {args.samples} samples, same seed\n\n"
               + table(HEADERS, rows))
    logp0 = zipf_logp(args.zipf_vocab, 1.1)
    exact = float((logp0.exp() * logp0).sum())
    tail = logp0.numel() // 2
    zrows = []
    for steps in args.zipf_steps:
        for precision in ("float64", "float32"):
            tok = zipf_race(logp0, steps, args.zipf_rows, precision)
            lp = logp0[tok]
            zrows.append([steps, precision, round(float(lp.mean()), 4), round(float(lp.std() / math.sqrt(lp.numel())), 4),
                          round(exact, 4), f"{100 * float((tok >= tail).double().mean()):.3f}%",
                          f"{100 * float(logp0[tail:].exp().sum()):.3f}%"])
    out.append(f"(ii) one position, Zipf(1.1) over V = {args.zipf_vocab} tokens, MDLM ancestral race over S linear "
               f"steps, {args.zipf_rows} draws per row\n\n"
               + table(["S", "draws", "mean log p(token)", "± s.e.", "exact (-entropy)", "tail tokens drawn",
                        "tail mass (exact)"], zrows))
    return "\n\n".join(out)


SECTIONS = {"quality": section_quality, "precision": section_precision}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--methods", nargs="+", default=None, help="only the quality rows whose name contains one of these")
    p.add_argument("--precision-steps", type=int, default=1024)
    p.add_argument("--zipf-vocab", type=int, default=4096)
    p.add_argument("--zipf-steps", type=int, nargs="+", default=[1024])
    p.add_argument("--zipf-rows", type=int, default=2000)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--plot-only", action="store_true", help="redraw the quality plots from discrete_quality.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.plot_only:
        plot_quality(rows_of_table(Path(args.out) / "discrete_quality.md"), Path(args.out))
        return
    for name in args.sections:
        text = SECTIONS[name](args)
        print(text, flush=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"discrete_{name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
