"""Training-free acceleration on the shipped digits models: FD_digits, CPU time and cost of block step caching
(model.step_cache, rel-L1 and SADA-gated), DeepCache (model.deep_cache), T-Stitch (model.stitch) and ParaDiGMS
(sample.paradigms), each against plain sampling at the same steps, in the same run.

FD_digits is benchmarks/guidance.py's: the Frechet distance of all samples (class-balanced) to the 300 held-out
digits in the shipped classifier's feature space. Time is the process CPU time summed over the ten class runs on
one thread (wall time on this shared 2-core machine varied 10x between identical runs; CPU time is the work).
Cost columns: block evaluations computed / skipped (caches), the small model's share of steps (T-Stitch),
sequential rounds and total evaluations (ParaDiGMS). Claims checked:
- T-Stitch (Pan et al. 2024): ~40% of the early steps can go to a ~10x cheaper model without an FD drop;
- ParaDiGMS (Shih et al. 2023): 2-4x wall-clock speed-up with parallel compute (here: 2 shared CPU cores, so
  rounds are the hardware-independent measure of the attainable speed-up);
- step caching / DeepCache: blocks saved at a small FD cost (the papers report wall-clock speed-ups on large
  UNets/DiTs, where a block is expensive; an MLP block is not).

    python benchmarks/accel.py [--quick]      (writes benchmarks/results/accel.md)"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from samplegraph.nodes.accel.deep_cache import ModelDeepCache
from samplegraph.nodes.accel.paradigms import StepRule, paradigms
from samplegraph.nodes.accel.step_cache import ModelStepCache
from samplegraph.nodes.accel.stitch import ModelStitch
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import Denoiser
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.data.digits import CLASSES
from samplegraph.nodes.latents.noise import LatentNoise
from samplegraph.nodes.metrics.common import frechet_distance, hits_and_confidence, in_chunks
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.digits_classifier import ModelDigitsClassifier
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.schedules.karras import Karras

from common import table
from guidance import Reference

RESULTS = Path(__file__).resolve().parent / "results"
Build = Callable[[int], Denoiser]  # class label -> the Denoiser sampled for it
Run = Callable[[Denoiser, Sigmas, torch.Tensor, NodeContext], tuple[torch.Tensor, dict]]


class Bench:
    """Models, classifier and reference features shared by every row."""

    def __init__(self, per_class: int, seed: int):
        self.main, self.weak = ModelDigits(variant="main").run(), ModelDigits(variant="weak").run()
        self.clf = ModelDigitsClassifier().run()
        self.ref = Reference.load(self.clf)
        self.per_class, self.seed = per_class, seed

    def large(self, label: int) -> Denoiser:
        return ModelCondition(label=label).run(self.main)

    def small(self, label: int) -> Denoiser:
        return ModelCondition(label=label).run(self.weak)

    def evaluate(self, build: Build, sigmas: Sigmas, run: Run) -> dict:
        """FD, accuracy and CPU time of sampling per_class of every class with `run`, plus run's extras."""
        xs, cpu, extra = [], 0.0, {}
        for label in range(CLASSES):
            ctx = NodeContext.detached(seed=1000 * self.seed + label)
            latent = LatentNoise(batch=self.per_class, shape=[8, 8]).run(sigmas, ctx)  # (n, 8, 8)
            denoise = build(label)
            start = time.process_time()
            x, more = run(denoise, sigmas, latent, ctx)
            cpu += time.process_time() - start
            xs.append(x)
            for k, v in more.items():
                extra[k] = extra.get(k, 0) + v
        x = torch.cat(xs)
        labels = torch.arange(CLASSES).repeat_interleave(self.per_class)
        hit, _ = hits_and_confidence(in_chunks(self.clf, x, 512), labels)
        fd = frechet_distance(in_chunks(self.clf.features, x, 512), self.ref.feats)
        return {"fd": fd, "accuracy": float(hit.mean()), "cpu": cpu, **extra}


def sequential(sampler: Sampler) -> Run:
    def run(denoise: Denoiser, sigmas: Sigmas, latent: torch.Tensor, ctx: NodeContext) -> tuple[torch.Tensor, dict]:
        x = run_steps(sampler, denoise, sampler.init(latent, sigmas), ctx.noise, ctx).x
        return x, {k: ctx.metrics[k] for k in ("blocks_computed", "blocks_skipped") if k in ctx.metrics}
    return run


def parallel(window: int, tol: float) -> Run:
    def run(denoise: Denoiser, sigmas: Sigmas, latent: torch.Tensor, ctx: NodeContext) -> tuple[torch.Tensor, dict]:
        rule = StepRule("euler", 0.0, ctx.noise, torch.arange(latent.shape[0]))
        x, rounds, evals = paradigms(denoise, sigmas.values, latent, rule, window, tol)
        return x, {"rounds": rounds, "evals": evals}
    return run


def caching_rows(b: Bench, steps: int) -> list[list[object]]:
    sigmas, sampler = Karras(steps=steps).run(), Dpmpp2M()
    configs: list[tuple[str, Build]] = [("plain", b.large)]
    for th in (0.05, 0.1, 0.2):
        configs.append((f"step_cache rel_l1 {th}", lambda y, th=th: ModelStepCache(threshold=th).run(b.large(y))))
    for th in (0.1, 0.2):
        configs.append((f"step_cache sada {th}", lambda y, th=th: ModelStepCache(threshold=th, criterion="sada")
                        .run(b.large(y))))
    for iv in (2, 3):
        configs.append((f"deep_cache interval {iv}", lambda y, iv=iv: ModelDeepCache(interval=iv).run(b.large(y))))
    rows = []
    for name, build in configs:
        r = b.evaluate(build, sigmas, sequential(sampler))
        total = r.get("blocks_computed", 0) + r.get("blocks_skipped", 0)
        skipped = f"{r['blocks_skipped'] / total:.0%}" if total else "0%"
        rows.append([steps, name, r["fd"], r["accuracy"], r["cpu"], skipped])
        print(rows[-1], flush=True)
    return rows


def stitch_rows(b: Bench, steps: int) -> list[list[object]]:
    sigmas, sampler = Karras(steps=steps).run(), Dpmpp2M()
    rows = []
    for frac in (0.0, 0.2, 0.4, 0.6, 1.0):
        k = round(frac * steps)  # the small model takes steps 0..k-1 (sigma > sigmas[k])
        switch = float(sigmas.values[k]) if k < steps else 0.0
        build = (lambda y, s=switch: ModelStitch(switch_sigma=s).run(b.small(y), b.large(y)))
        r = b.evaluate(build, sigmas, sequential(sampler))
        rows.append([steps, f"{k}/{steps}", f"{switch:.3g}", r["fd"], r["accuracy"], r["cpu"]])
        print(rows[-1], flush=True)
    return rows


def paradigms_rows(b: Bench, steps: int) -> list[list[object]]:
    """Rounds are sequential batched calls: steps / rounds is the speed-up with enough parallel compute that a
    call of window x batch rows costs what one of batch rows does; the CPU column is the total work here."""
    sigmas = Karras(steps=steps).run()
    base = b.evaluate(b.large, sigmas, sequential(Euler()))
    rows = [[steps, "sequential Euler", base["fd"], base["cpu"], steps, steps, 1.0, 1.0]]
    for window in (8, 16, steps):
        for tol in (1e-1, 1e-2, 1e-3):
            r = b.evaluate(b.large, sigmas, parallel(window, tol))
            rounds, evals = r["rounds"] / CLASSES, r["evals"] / CLASSES  # per class run
            rows.append([steps, f"window {window}, tol {tol}", r["fd"], r["cpu"], rounds, evals, steps / rounds,
                         base["cpu"] / r["cpu"]])
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and step counts")
    args = parser.parse_args()
    torch.set_num_threads(1)
    b = Bench(per_class=10 if args.quick else 50, seed=0)
    step_counts = (10,) if args.quick else (10, 20, 50)
    cache = [row for s in step_counts for row in caching_rows(b, s)]
    stitch = [row for s in step_counts for row in stitch_rows(b, s)]
    para = [row for s in ((20,) if args.quick else (50, 100)) for row in paradigms_rows(b, s)]
    out = ["# Training-free acceleration on the digits models (benchmarks/accel.py)", "",
           f"{b.per_class} samples per class (x10 classes), FD_digits vs 300 held-out digits; CPU s: process CPU "
           f"seconds on one thread, all ten classes.", "",
           "## Block step caching and DeepCache (DPM++ 2M)", "",
           table(["steps", "method", "FD", "accuracy", "CPU s", "blocks skipped"], cache), "",
           "## T-Stitch: small (weak) model on the first k steps, main model after (DPM++ 2M)", "",
           table(["steps", "small steps", "switch sigma", "FD", "accuracy", "CPU s"], stitch), "",
           "## ParaDiGMS over Euler steps", "",
           table(["steps", "method", "FD", "CPU s", "rounds", "evaluations", "ideal speed-up", "CPU ratio"],
                 para), ""]
    text = "\n".join(out)
    print(text)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "accel.md").write_text(text)


if __name__ == "__main__":
    main()
