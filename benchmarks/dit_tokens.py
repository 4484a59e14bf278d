"""Token-level acceleration on the shipped MNIST DiT: plain sampling vs region-adaptive sampling (model.ras,
ratios 0.25 / 0.5 / 0.75) vs bottleneck sampling (sample.bottleneck, 28-16-28), at equal steps and at
equal compute; checks RAS's headline claim (up to 2.36x speed-up at similar quality).

    python benchmarks/dit_tokens.py [--quick] [--steps N] [--per-class N]

Setup: model.mnist_dit through model.condition (no CFG: model.ras is stateful and refuses guidance
wrappers, so every row is the conditional model alone), sampler.euler (the authors' RAS scheduler is
Euler) on Karras sigmas 80 -> 0.002 (rho 7), float32, one CPU thread. All 10 classes, PER_CLASS samples
each; the initial noise of class c is latent.noise with workflow seed 1000 + c for every method (common
random numbers). Each node runs through its own run() with a NodeContext, as a workflow runs it.

Metrics: FD_MNIST = metrics.frechet_distance in model.mnist_classifier's 64-d feature space of all samples
against the 500 held-out MNIST images (data.mnist split heldout); accuracy = argmax of the same
classifier equals the class asked for; cost = token-blocks computed / the plain run's at the same steps
(RAS's TokenStats; bottleneck: pixels evaluated, proportional to tokens for a patch DiT); CPU s = process
CPU seconds to sample every class once on one thread (best of REPEAT; CPU time rather than wall time because
the 2-core machine is shared with other jobs), speed-up = plain's CPU s / the method's.
RAS: dense_calls 3 and dense_at [7, 13] at 18 steps (the authors' 4 of 30 and resets 12, 22, scaled).
Rows at equal compute: plain Euler with the steps whose cost matches each method's (rounded; one row per
step count). Bottleneck: stages of steps // 4, the rest, steps // 4 at sides 28, 16, 28, lift 1 / 1.5 / 2.
Writes benchmarks/results/dit_tokens.md (--quick: dit_tokens_quick.md)."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from samplegraph.nodes.accel.bottleneck import SampleBottleneck
from samplegraph.nodes.accel.ras import ModelRAS
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import Denoiser
from samplegraph.nodes.data.mnist import DataMnist
from samplegraph.nodes.latents.noise import LatentNoise
from samplegraph.nodes.metrics.frechet_distance import FrechetDistance
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.mnist_classifier import ModelMnistClassifier
from samplegraph.nodes.models.mnist_dit import ModelMnistDiT
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.sample import Sample
from samplegraph.nodes.schedules.karras import Karras

from common import table

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
CLASSES, REPEAT = 10, 3
RATIOS = (0.25, 0.5, 0.75)
LIFTS = (1.0, 1.5, 2.0)  # bottleneck: re-noise to lift x the boundary sigma at each resolution change


@dataclass
class Row:
    name: str
    steps: int
    nfe: int
    cost: float
    fd: float
    accuracy: float
    wall: float


def run_method(name: str, steps: int, per_class: int, method: str, ratio: float = 1.0, lift: float = 1.5) -> Row:
    """Sample every class with one method; FD, accuracy, cost and wall time."""
    model, classifier = ModelMnistDiT().run(), ModelMnistClassifier().run()
    sigmas = Karras(steps=steps, sigma_min=0.002, sigma_max=80.0).run()

    def once() -> tuple[torch.Tensor, int, float]:
        out, nfe, computed, dense = [], 0, 0.0, 0.0
        for c in range(CLASSES):
            ctx = NodeContext.detached(seed=1000 + c)
            cond = ModelCondition(label=c).run(model)
            latent = LatentNoise(batch=per_class, shape=[28, 28]).run(sigmas, ctx)
            denoise: Denoiser = cond
            if method == "ras":
                denoise = ModelRAS(ratio=ratio, dense_calls=3, dense_at=[7, 13] if steps >= 14 else []).run(cond)
            if method == "bottleneck":
                low = steps - 2 * (steps // 4)
                x = SampleBottleneck(sizes=[28, 16, 28], steps=[steps // 4, low, steps // 4], lift=lift).run(
                    denoise, sigmas, Euler(), latent, ctx)
                computed += ctx.metrics["pixel_evaluations"]
                dense += ctx.metrics["dense_pixel_evaluations"]
            else:
                x = Sample(checkpoint_seconds=None).run(denoise, sigmas, Euler(), latent, ctx)
                stats = getattr(denoise, "stats", None)
                computed += stats.computed if stats else 1.0
                dense += stats.dense if stats else 1.0
            nfe = ctx.metrics["nfe"]
            out.append(x)
        return torch.cat(out), nfe, computed / dense

    walls = []
    for _ in range(REPEAT):
        start = time.process_time()
        samples, nfe, cost = once()
        walls.append(time.process_time() - start)
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    reference = DataMnist(split="heldout").run().images
    fd = FrechetDistance().run(samples, reference, NodeContext.detached(), classifier)
    accuracy = float((classifier(samples).argmax(1) == labels).double().mean())
    return Row(name, steps, nfe, cost, fd, accuracy, min(walls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--per-class", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps, per_class = (6, 4) if args.quick else (args.steps, args.per_class)
    rows = [run_method("plain", steps, per_class, "plain")]
    rows += [run_method(f"RAS {r}", steps, per_class, "ras", r) for r in RATIOS]
    rows += [run_method(f"bottleneck 28-16-28 lift {lift}", steps, per_class, "bottleneck", lift=lift)
             for lift in LIFTS]
    equal, seen = [], set()
    for r in rows[1:]:
        if round(steps * r.cost) in seen:
            continue
        seen.add(round(steps * r.cost))
        matched = max(1, round(steps * r.cost))
        equal.append(run_method(f"plain at {r.name}'s cost ({matched} steps)", matched, per_class, "plain"))
    floor = run_method("plain, 1 step", 1, per_class, "plain")
    headers = ["method", "steps", "NFE", "cost", "FD_MNIST", "accuracy", "CPU s", "speed-up"]
    base = rows[0].wall

    def cells(r: Row) -> list[object]:
        return [r.name, r.steps, r.nfe, round(r.cost, 3), round(r.fd, 2), round(r.accuracy, 3), round(r.wall, 2),
                round(base / r.wall, 2)]

    text = ["# Token-level acceleration on model.mnist_dit", "",
            f"Euler, Karras sigmas, {per_class} samples per class x 10 classes, FD against 500 held-out images "
            f"in model.mnist_classifier features; CPU s = process CPU seconds on one thread, best of {REPEAT}.", "",
            "## Equal steps", "", table(headers, [cells(r) for r in rows + [floor]]), "",
            "## Equal compute (plain Euler at the steps matching each method's cost)", "",
            table(headers, [cells(r) for r in equal]), ""]
    ras = [r for r in rows if r.name.startswith("RAS")]
    best = max((r for r in ras if r.fd <= 1.25 * rows[0].fd), key=lambda r: base / r.wall, default=None)
    text += ["## RAS claim: up to 2.36x speed-up at similar quality", "",
             (f"Best RAS speed-up with FD within 25% of plain: {best.name}, {base / best.wall:.2f}x (FD {best.fd:.2f} "
              f"vs {rows[0].fd:.2f})." if best else "No RAS ratio kept FD within 25% of plain."), ""]
    out = RESULTS / ("dit_tokens_quick.md" if args.quick else "dit_tokens.md")
    out.write_text("\n".join(text))
    print("\n".join(text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
