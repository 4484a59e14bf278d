"""Schedules and solver plans found by optimisation versus hand-made schedules, at 5-20 NFE (issue 14).

Methods: Karras (rho 7), log-uniform (schedule.exponential), Align Your Steps' published SD1.5 table
(schedule.ays, its own sigma range 14.6 .. 0.03), schedule.gits, schedule.ays_optimize, sampler.plan_search
(candidates Euler, Heun, DPM++ 2M, iPNDM) against the best single candidate on Karras steps, and
sample.adaptive_steps (AdaptiveDiffusion skipping on a 1.5x finer Karras grid) against uniform allocation at
its mean NFE. Calibration always uses other seeds than the evaluation.

- model.gmm (ring, exact denoiser): mean L2 distance of 1024 held-out samples to the exact ODE endpoint of
  the same initial noise (Heun, 400 Karras steps from that schedule's sigma_max).
- digits (model.digits, unconditional): FD_digits of 1000 samples against the 300 held-out images in the
  clean classifier's 64-d features (floor: the 1497 training images give the value in the header).

Run: PYTHONPATH=... python benchmarks/schedule_search.py [--quick] (quick: model.gmm only)."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import CountingDenoiser, Denoiser
from samplegraph.nodes.core.sampler import Sampler
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.data.digits import digits_split
from samplegraph.nodes.metrics.common import frechet_distance, in_chunks
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.digits_classifier import ModelDigitsClassifier
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.adaptive_steps import AdaptiveSteps
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.from_plan import FromPlan
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.samplers.ipndm import Ipndm
from samplegraph.nodes.samplers.plan_search import PlanSearch
from samplegraph.nodes.schedules.ays import AlignYourSteps
from samplegraph.nodes.schedules.ays_optimize import AYSOptimize
from samplegraph.nodes.schedules.calibration import initial_noise, sample_error, solve
from samplegraph.nodes.schedules.exponential import Exponential
from samplegraph.nodes.schedules.gits import GITS
from samplegraph.nodes.schedules.karras import Karras

sys.path.insert(0, str(Path(__file__).parent))
from common import table  # noqa: E402

NFES = (5, 8, 10, 15, 20)
CANDIDATES: list[Sampler] = [Euler(), Heun(), Dpmpp2M(), Ipndm()]
SOLVERS = {"Euler": Euler(), "DPM++ 2M": Dpmpp2M()}
Metric = Callable[[torch.Tensor, torch.Tensor, Sigmas], float]  # (final x, initial x, schedule) -> error


class Problem:
    """A model, held-out initial noise (unit normals) and a metric of final samples."""

    def __init__(self, name: str, denoise: Denoiser, shape: tuple[int, ...], n: int, metric: str,
                 gits: GITS, ays: AYSOptimize, search: PlanSearch, ays_data: torch.Tensor | None):
        self.name, self.denoise, self.shape, self.metric = name, denoise, shape, metric
        self.eps = initial_noise(7, n, shape, 1.0)  # (N, ...) held-out unit noise
        self.gits, self.ays, self.search, self.ays_data = gits, ays, search, ays_data
        self.truths: dict[float, torch.Tensor] = {}
        self.reference = None

    def error(self, sampler: Sampler, sigmas: Sigmas) -> tuple[float, int]:
        """(metric, batched calls) of a solve from eps * sigma_max."""
        counted = CountingDenoiser(self.denoise)
        x = solve(sampler, counted, self.eps * sigmas.sigma_max, sigmas, 0)
        return self.score(x, sigmas.sigma_max), counted.calls

    def score(self, x: torch.Tensor, sigma_max: float) -> float:
        if self.metric == "l2":
            if sigma_max not in self.truths:
                self.truths[sigma_max] = solve(Heun(), self.denoise, self.eps * sigma_max,
                                               Karras(steps=400, sigma_max=sigma_max,
                                                      sigma_min=min(0.002, sigma_max / 10)).run(), 0)
            return sample_error(x, self.truths[sigma_max])
        return frechet_distance(self.features(x), self.reference)


def gmm_problem(quick: bool) -> Problem:
    model = ModelGMM().run()
    return Problem("model.gmm ring", model, (2,), 1024, "l2", GITS(particles=256), AYSOptimize(particles=256),
                   PlanSearch(particles=128, seed=1), None)


def digits_problem() -> Problem:
    model = ModelCondition(label=None).run(ModelDigits().run())
    clf = ModelDigitsClassifier().run()
    train, _ = digits_split("train")
    heldout, _ = digits_split("heldout")
    p = Problem("digits (model.digits, unconditional)", model, (8, 8), 1000, "fd",
                GITS(particles=128, shape=[8, 8]),
                AYSOptimize(particles=128, shape=[8, 8], candidates=8, quadrature=4, iterations=4),
                PlanSearch(particles=64, shape=[8, 8], seed=1, rounds=2), train)
    p.features = lambda x: in_chunks(clf.features, x.float(), 500)  # (N, 64)
    p.reference = p.features(heldout)
    p.floor = frechet_distance(p.features(train), p.reference)
    return p


def schedule_rows(p: Problem) -> list[list[object]]:
    """One row per (schedule, solver): the metric at each NFE (1-NFE solvers: steps = NFE)."""
    rows = []
    makers = {"Karras": lambda s: Karras(steps=s).run(), "log-uniform": lambda s: Exponential(steps=s).run(),
              "AYS table (SD1.5)": lambda s: AlignYourSteps(steps=s).run(),
              "GITS": lambda s: p.gits.model_copy(update={"steps": s}).run(p.denoise),
              "AYS-optimised": lambda s: ays_run(p, s)}
    for name, make in makers.items():
        schedules = {s: make(s) for s in NFES}
        for solver_name, solver in SOLVERS.items():
            rows.append([name, solver_name, *(p.error(solver, schedules[s])[0] for s in NFES)])
    return rows


def ays_run(p: Problem, steps: int) -> Sigmas:
    node = p.ays.model_copy(update={"steps": steps})
    if p.ays_data is None:
        return node.run(p.denoise, NodeContext.detached(), reference=p.denoise)
    return node.run(p.denoise, NodeContext.detached(), data=p.ays_data)


def plan_rows(p: Problem) -> tuple[list[list[object]], list[str]]:
    """Plan search versus the best single candidate on Karras steps, per NFE budget; and the plans found."""
    search, single, found = [], [], []
    for nfe in NFES:
        t = time.perf_counter()
        result = p.search.model_copy(update={"nfe": nfe}).run(p.denoise, CANDIDATES, NodeContext.detached())
        seconds = time.perf_counter() - t
        value, calls = p.error(FromPlan().run(result.plan, CANDIDATES), result.sigmas)
        search.append(value)
        single.append(min(best_single(p, s, nfe) for s in CANDIDATES))
        kinds = [s["kind"].removeprefix("sampler.") for s in result.plan.samplers]
        found.append(f"- {nfe} NFE ({calls} used, search {seconds:.1f} s): {kinds} switch_at "
                     f"{list(result.plan.switch_at)}, sigmas {[round(v, 3) for v in result.plan.sigmas]}")
    return [["plan search", *search], ["best single candidate (Karras)", *single]], found


def best_single(p: Problem, sampler: Sampler, nfe: int) -> float:
    best = float("inf")
    for steps in range(1, nfe + 1):
        value, calls = p.error(sampler, Karras(steps=steps).run())
        if calls > nfe:
            break
        best = value
    return best


def adaptive_rows(p: Problem) -> list[list[object]]:
    """AdaptiveDiffusion skipping on a 1.5x finer grid versus uniform allocation at its mean NFE."""
    rows = []
    for nfe in NFES:
        fine = Karras(steps=round(1.5 * nfe)).run()
        x, calls, per_particle = AdaptiveSteps(threshold=0.05).solve(p.denoise, p.eps * 80.0, fine)
        mean = float(per_particle.float().mean())
        uniform = p.error(Euler(), Karras(steps=max(1, round(mean))).run())[0]
        rows.append([fine.steps, round(mean, 2), calls, int(per_particle.min()), int(per_particle.max()),
                     p.score(x, 80.0), round(mean), uniform])
    return rows


def report(p: Problem) -> str:
    nfe_cols = [f"{n} NFE" for n in NFES]
    unit = "mean L2 to the exact ODE endpoint" if p.metric == "l2" else f"FD_digits (floor {p.floor:.3g})"
    plans, found = plan_rows(p)
    parts = [f"### {p.name}: {unit}", "", table(["schedule", "solver", *nfe_cols], schedule_rows(p)), "",
             "Per-step solver search (candidates Euler, Heun, DPM++ 2M, iPNDM; coordinate descent):", "",
             table(["configuration", *nfe_cols], plans), "", *found, "",
             "Adaptive step skipping (sample.adaptive_steps, threshold 0.05) vs uniform Euler at its mean NFE:", "",
             table(["fine steps", "mean NFE", "batched calls", "min", "max", "adaptive", "uniform steps",
                    "uniform"], adaptive_rows(p))]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="model.gmm only")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "schedule_search.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    problems = [gmm_problem(args.quick)] + ([] if args.quick else [digits_problem()])
    text = "\n\n".join(report(p) for p in problems)
    print(text)
    if not args.quick:
        Path(args.out).write_text("# Schedule and solver search (benchmarks/schedule_search.py)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
