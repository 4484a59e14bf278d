"""Train the masked diffusion LM shipped as nodes/discrete/weights/mdm.safetensors (model.mdm).

Data: fresh strings of the repo's grammar (nodes/lm/grammar/, as for the char LM) every step, each
one string followed by EOS padding to L = 65 (the longest string the grammar derives is 64 bytes).
Loss: MDLM's continuous-time NELBO with the linear schedule alpha(t) = 1 - t (Sahoo et al. 2024,
eq. 11): E_t [1/t sum_{masked l} -log p(x0_l | x_t)], t low-discrepancy over the batch (t_i =
(u + i/B) mod 1), each position masked with probability t. Network: nodes/lm/char_lm.py's
transformer, bidirectional (nodes/discrete/mdm.py), time-agnostic, AdamW with warm-up and cosine decay.

Held-out scores, exact where they can be: the NELBO (an upper bound on the model's NLL) in its
any-order form E_{k ~ U{1..L}} [L/k sum over k random masked positions of -log p] (Ou et al. 2024;
the same quantity as the continuous bound), k stratified over DRAWS draws per string, in nats per
string and per token (tokens = characters + one EOS, as the char LM and the grammar's entropy rate
H(X) / E[|X| + 1] count them) beside the grammar's exact entropy; and the validity rate of samples
from a one-token-at-a-time random-order sampler (exact ancestral sampling of the model's any-order
joint; evaluation only, the sampler nodes live in nodes/discrete/samplers/). All scores are those of
the saved float16 weights. Deterministic: fixed seeds, one CPU thread, deterministic algorithms.
From the repository root:
    python training/train_mdm.py [--steps N] [--batch B] [--out PATH]

Measured here (1 thread, 2 cores shared with other jobs; d_model 64, 3 layers, 4 heads, L 65: 157,248
parameters, 318 kB in float16). Held-out: 2000 strings x 8 draws; validity: 1000 samples ("valid" = in
the language and only EOS after the text; "in lang." counts the text before the first EOS only).
Grammar on the same strings: 12.174 nats/string, 0.7749 nats/token; exact entropy 12.172 nats/string,
rate 0.7690 nats/token.

    steps  batch  params  CPU s   NELBO/string  NELBO/token  valid   in lang.  distinct
     4000*    64    458k    591        16.117       1.0259   46.4%    47.7%     94.0%
     6000     64    157k    412        15.326       0.9755   50.9%    54.4%     92.8%
    12000     64    157k    841        13.471       0.8575   65.8%    67.1%     89.4%
     7000    128    157k    980        13.300       0.8466   68.8%    69.8%     90.9%
    18000     64    157k   1283        13.041       0.8301   73.8%    74.6%     91.1%   <- shipped (defaults)
     6500    192    157k   1421        12.984       0.8265   73.7%    73.9%     90.5%
    (* d_model 96, 4 layers)

The issue's target (> 80% valid) is not reached in this budget: validity still rises with training
(~+8-15 points per doubling of strings seen), the NELBO's gap to the entropy (0.87 nats/string) is what
the samples pay for."""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from samplegraph.nodes.discrete.mdm import MASK, WEIGHTS, MDMConfig, build_mdm, load_mdm
from samplegraph.nodes.lm.char_lm import EOS, FIRST_CHAR, CharTransformer
from samplegraph.nodes.lm.grammar import Corpus, corpus
from samplegraph.nodes.models.networks.checkpoint import round_weights, save_network
from samplegraph.nodes.models.networks.optim import warmup_cosine_adamw

STEPS, BATCH, LR, WARMUP, LENGTH, T_MIN = 18000, 64, 3e-3, 100, 65, 1e-3
TRAIN_SEED, HELDOUT_SEED, HELDOUT, DRAWS, ELBO_SEED = 0, 1, 2000, 8, 2
CHECK_STRINGS, CHECK_DRAWS = 200, 4  # the small held-out NELBO the tests recompute from the file
SAMPLES, SAMPLE_SEED = 1000, 3


def default_config(lang: Corpus) -> MDMConfig:
    return MDMConfig(denoiser="masked", alphabet=lang.alphabet().decode("ascii"), d_model=64, layers=3, heads=4,
                     context=LENGTH)


def encode_batch(strings: list[bytes], config: MDMConfig) -> torch.Tensor:
    """(B, L) int64: each string's ids then EOS padding to L = config.context."""
    ids = {c: FIRST_CHAR + i for i, c in enumerate(config.alphabet.encode("ascii"))}
    out = torch.full((len(strings), config.context), EOS, dtype=torch.long)
    for i, s in enumerate(strings):
        if len(s) >= config.context:
            raise ValueError(f"a string of {len(s)} bytes does not fit L = {config.context} with its EOS")
        out[i, :len(s)] = torch.tensor([ids[c] for c in s], dtype=torch.long)
    return out


def masked_ce(net: CharTransformer, x0: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """(B,) summed -log p(x0_l | x_t) over the masked positions (B, L) bool of x0 (B, L)."""
    xt = torch.where(masked, MASK, x0)
    pos = torch.arange(x0.shape[1]).expand_as(x0)
    logits = net(xt, pos).index_fill(-1, torch.tensor([MASK]), -math.inf)  # (B, L, V): MASK never clean
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")  # (B, L)
    return (ce * masked).sum(-1)


def mdlm_loss(net: CharTransformer, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-token continuous-time NELBO of a batch (Sahoo et al. 2024), low-discrepancy t, linear schedule."""
    b, length = x0.shape
    t = (torch.rand(1, generator=gen) + torch.arange(b) / b) % 1.0  # (B,) stratified over [0, 1)
    t = T_MIN + (1 - T_MIN) * t
    masked = torch.rand(b, length, generator=gen) < t[:, None]  # (B, L)
    return (masked_ce(net, x0, masked) / t).mean() / length


@torch.no_grad()
def heldout_nelbo(net: CharTransformer, strings: list[bytes], draws: int, seed: int, chunk: int = 256) -> float:
    """Mean NELBO per string (nats): any-order form, k masked positions of L stratified over `draws`
    draws per string (Ou et al. 2024); deterministic given the seed."""
    gen = torch.Generator().manual_seed(seed)
    x0 = encode_batch(strings, net.config).repeat_interleave(draws, 0)  # (N D, L)
    n, length = x0.shape
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    k = ((torch.arange(n) % draws + u) / draws * length).long().clamp(max=length - 1) + 1  # (N D,) in 1..L
    order = torch.rand(n, length, generator=gen).argsort(-1).argsort(-1)  # (N D, L) random ranks
    masked = order < k[:, None]  # (N D, L): k random positions
    total = sum(float((masked_ce(net, x0[i:i + chunk], masked[i:i + chunk]) * length
                       / k[i:i + chunk]).sum()) for i in range(0, n, chunk))
    return total / n


@torch.no_grad()
def random_order_samples(net: CharTransformer, n: int, seed: int) -> torch.Tensor:
    """(n, L) sequences drawn exactly from the model's any-order joint: one masked position at a time,
    uniformly at random, its token from the model's posterior (float64 Gumbel-max)."""
    gen = torch.Generator().manual_seed(seed)
    length = net.config.context
    x = torch.full((n, length), MASK, dtype=torch.long)
    pos = torch.arange(length).expand_as(x)
    rows = torch.arange(n)
    for _ in range(length):
        logp = net(x, pos).index_fill(-1, torch.tensor([MASK]), -math.inf).double().log_softmax(-1)  # (n, L, V)
        score = torch.rand(n, length, generator=gen, dtype=torch.float64).masked_fill(x != MASK, -1.0)
        at = score.argmax(-1)  # (n,) a uniformly chosen masked position
        gumbel = -torch.log(-torch.log(torch.rand(n, logp.shape[-1], generator=gen, dtype=torch.float64)))
        x[rows, at] = (logp[rows, at] + gumbel).argmax(-1)
    return x


def decode_rows(x: torch.Tensor, config: MDMConfig) -> list[tuple[bytes, bool]]:
    """Each row's text (up to its first EOS) and whether only EOS follows it (a well-formed padding)."""
    chars = config.alphabet.encode("ascii")
    out = []
    for row in x.tolist():
        end = row.index(EOS) if EOS in row else len(row)
        out.append((bytes(chars[i - FIRST_CHAR] for i in row[:end]), all(i == EOS for i in row[end:])))
    return out


def validity(net: CharTransformer, lang: Corpus, n: int, seed: int) -> dict[str, float]:
    """Fraction of random-order samples in the language (and well padded), and their mean grammar log-prob."""
    rows = decode_rows(random_order_samples(net, n, seed), net.config)
    lp = [lang.logprob(text) for text, _ in rows]
    ok = [math.isfinite(v) and padded for v, (_, padded) in zip(lp, rows)]
    good = [v for v, k in zip(lp, ok) if k]
    return {"valid": sum(ok) / n, "in_language": sum(math.isfinite(v) for v in lp) / n,
            "valid_logprob": sum(good) / max(len(good), 1), "distinct": len({t for t, _ in rows}) / n}


def train(config: MDMConfig, steps: int, batch: int = BATCH,
          seed: int = TRAIN_SEED) -> tuple[CharTransformer, list[float]]:
    """AdamW with a linear warm-up then cosine decay to 0, on `batch` fresh grammar strings per step."""
    torch.manual_seed(seed)
    lang, gen = corpus(), torch.Generator().manual_seed(seed)
    net = build_mdm(config)
    opt, sched = warmup_cosine_adamw(net, LR, steps, WARMUP)
    losses = []
    for _ in range(steps):
        loss = mdlm_loss(net, encode_batch(lang.sample(gen, batch), config), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return net.eval(), losses


def heldout_strings(lang: Corpus, n: int = HELDOUT) -> list[bytes]:
    return lang.sample(torch.Generator().manual_seed(HELDOUT_SEED), n)


def check_nelbo(net: CharTransformer, lang: Corpus) -> float:
    """The small held-out NELBO per string stored in the file for the tests to recompute."""
    return heldout_nelbo(net, heldout_strings(lang, CHECK_STRINGS), CHECK_DRAWS, ELBO_SEED)


def fit(net: CharTransformer, lang: Corpus) -> dict[str, float]:
    """Held-out NELBO per string and per token beside the grammar's NLL on the same strings and its entropy."""
    strings = heldout_strings(lang)
    tokens = sum(len(s) + 1 for s in strings) / len(strings)  # mean tokens per string (EOS included)
    nelbo = heldout_nelbo(net, strings, DRAWS, ELBO_SEED)
    grammar = -sum(lang.logprob(s) for s in strings) / len(strings)
    return {"nelbo_per_string": nelbo, "nelbo_per_token": nelbo / tokens, "grammar_nll_per_string": grammar,
            "grammar_nll_per_token": grammar / tokens, "entropy_per_string": lang.stats().entropy,
            "entropy_rate": lang.entropy_per_char(), "check_nelbo": check_nelbo(net, lang)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    lang = corpus()
    config = default_config(lang).model_copy(update={"d_model": args.d_model, "layers": args.layers})
    cpu = time.process_time()
    net, losses = train(config, args.steps, args.batch)
    seconds = time.process_time() - cpu
    chunk = max(1, len(losses) // 10)
    for i in range(0, len(losses), chunk):
        part = losses[i:i + chunk]
        print(f"steps {i:5d}-{i + len(part) - 1:5d}: mean loss {sum(part) / len(part):.4f}", flush=True)
    net = round_weights(net, torch.float16)
    params = sum(p.numel() for p in net.parameters())
    scores = {k: round(v, 6) for k, v in {**fit(net, lang), **validity(net, lang, SAMPLES, SAMPLE_SEED)}.items()}
    print(f"trained {args.steps} steps in {seconds:.0f} CPU s, {params} parameters; {scores}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_network(net, net.config, args.out, {"training": {
        "script": "training/train_mdm.py", "steps": args.steps, "batch": args.batch, "seed": TRAIN_SEED,
        "cpu_s": round(seconds), "parameters": params, "check": {"strings": CHECK_STRINGS, "draws": CHECK_DRAWS,
                                                                   "seed": ELBO_SEED}, **scores}},
                 dtype=torch.float16)
    reloaded = check_nelbo(load_mdm(args.out).net, lang)
    if abs(reloaded - scores["check_nelbo"]) > 1e-4:
        raise SystemExit(f"the saved weights give held-out NELBO {reloaded:.6f}, not {scores['check_nelbo']:.6f}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
