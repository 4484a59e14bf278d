"""Fast solvers II (issue 14): SA-Solver, IIA, AMO and EVODiff against Euler, Heun, DPM++(2M) and UniPC at 5-20 NFE,
in the same run.

    python benchmarks/fast_solvers_ii.py [--particles 512] [--digits 600] [--threads 1]

1. ODE error on the analytic 8-mode ring GMM (float64): Karras sigmas 80 -> 0.002 without the final step to 0;
   error = median distance to scipy's DOP853 solution (benchmarks/solvers.py's reference). IIA's coefficients
   are fitted on 64 calibration starts (seed 7), measured on the held-out starts (seed 1).
2. Sample quality on the ring GMM: sliced W2 (256 directions) of 2048 samples to 20000 exact draws, for the
   stochastic configurations (SA-Solver with tau, AMO on a flow-time grid) next to their noise-free limits.
3. FD on the digits models: Frechet distance in model.digits_classifier's feature space between unconditional
   samples and the 300 held-out digits; Karras sigmas (with the final step to 0) for the eps/x0 model, and the
   flow model's own uniform-time grid (schedule.normal) for AMO and its Euler baseline.
A method whose NFE does not fit a budget exactly (Heun: 2 per step, the step to 0 one) runs the most steps
that fit. Writes benchmarks/results/fast_solvers_ii.md."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from samplegraph.nodes.core.denoiser import CountingDenoiser, Denoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.data.digits import digits_split
from samplegraph.nodes.metrics.common import frechet_distance, sliced_wasserstein
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.digits_classifier import ModelDigitsClassifier
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.amo import Amo
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.evodiff import EvoDiff
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.samplers.iia import Iia
from samplegraph.nodes.samplers.iia_fit import fit_coefficients
from samplegraph.nodes.samplers.sa_solver import SaSolver
from samplegraph.nodes.samplers.unipc import UniPC
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.nodes.schedules.normal import Normal

from common import table
from solvers import karras, reference

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "fast_solvers_ii.md"
F64 = torch.float64
NFES = [5, 8, 10, 15, 20]
Grid = Callable[[int], Sigmas]  # steps -> sigmas
Build = Callable[[Denoiser, Grid, int], Sampler]  # (denoiser, grid, steps) -> sampler (IIA fits here)


def sa(tau: float, p: int = 2, c: int = 3, few: bool = False) -> Build:
    return lambda d, g, n: SaSolver(predictor_order=p, corrector_order=c, tau=tau, few_step_term=few)


def plain(sampler: Sampler) -> Build:
    return lambda d, g, n: sampler


def iia(base: Sampler, calib: Callable[[Sigmas], torch.Tensor]) -> Build:
    """IIA around `base`, coefficients fitted on the calibration starts for this very grid."""
    def build(d: Denoiser, g: Grid, n: int) -> Sampler:
        rows = fit_coefficients(base, d, g(n), calib(g(n)), fine_steps=16)
        return Iia(coefficients=rows).run(base)
    return build


def solve(sampler: Sampler, d: Denoiser, x: torch.Tensor, sigmas: Sigmas) -> tuple[torch.Tensor, int]:
    counted = CountingDenoiser(d)
    out = run_steps(sampler, counted, sampler.init(x, sigmas), NoiseSource(0)).x
    return out, counted.calls


def within(build: Build, d: Denoiser, grid: Grid, nfe: int, start: Callable[[Sigmas], torch.Tensor]
           ) -> tuple[torch.Tensor, int]:
    """The sample of the most steps whose NFE fits `nfe`, and that NFE."""
    for steps in range(nfe, 0, -1):
        sampler = build(d, grid, steps)
        per = sampler.step_nfe
        if per * steps - (per - 1) * int(float(grid(steps).values[-1]) == 0) <= nfe:
            out, used = solve(sampler, d, start(grid(steps)), grid(steps))
            return out, used
    raise ValueError(f"no step count fits {nfe} NFE")


def gmm_error(particles: int) -> str:
    model = ModelGMM(preset="ring").run()
    grid = lambda n: Sigmas(karras(n))  # noqa: E731
    x = 80.0 * NoiseSource(1).normal(torch.arange(particles), -1, (2,), dtype=F64)  # (N, 2)
    ref = reference(model, x)
    calib = lambda s: 80.0 * NoiseSource(7).normal(torch.arange(64), -1, (2,), dtype=F64)  # noqa: E731
    methods = {"euler": plain(Euler()), "heun": plain(Heun()), "dpmpp_2m": plain(Dpmpp2M()),
               "unipc": plain(UniPC()), "sa_solver (2,3) tau=0": sa(0.0),
               "sa_solver (3,3) tau=0, diffusers' term": sa(0.0, 3, 3, True),
               "iia(euler)": iia(Euler(), calib), "iia(dpmpp_2m)": iia(Dpmpp2M(), calib),
               "evodiff": plain(EvoDiff()), "evodiff, no last-step rule": plain(EvoDiff(lower_order_final=False))}
    rows = []
    for name, build in methods.items():
        errors = []
        for nfe in NFES:
            out, _ = within(build, model, grid, nfe, lambda s: x)
            errors.append(float((out - ref).norm(dim=1).median()))
        rows.append([name, *errors])
    return table(["method \\ NFE", *map(str, NFES)], rows)


def gmm_quality(particles: int) -> str:
    model = ModelGMM(preset="ring").run()
    exact = model.sample(20000, torch.Generator().manual_seed(3))  # (M, 2)
    karras0 = lambda n: Karras(steps=n, sigma_min=0.002, sigma_max=80.0).run()  # noqa: E731

    def flow_time(n: int) -> Sigmas:
        s = torch.linspace(0.995, 0, n + 1, dtype=F64)  # uniform in s = sigma / (1 + sigma)
        return Sigmas(s / (1 - s))

    methods = {"euler (karras)": (plain(Euler()), karras0), "dpmpp_2m (karras)": (plain(Dpmpp2M()), karras0),
               "sa_solver (2,3) tau=0 (karras)": (sa(0.0), karras0),
               "sa_solver (2,3) tau=1 (karras)": (sa(1.0), karras0),
               "euler (flow time)": (plain(Euler()), flow_time), "amo c=2 (flow time)": (plain(Amo(c=2.0)), flow_time),
               "amo c=0.5 (flow time)": (plain(Amo(c=0.5)), flow_time)}
    rows = []
    for name, (build, grid) in methods.items():
        values = []
        for nfe in NFES:
            start = lambda s: s.sigma_max * NoiseSource(2).normal(torch.arange(particles), -1, (2,), dtype=F64)  # noqa: E731
            out, _ = within(build, model, grid, nfe, start)
            values.append(sliced_wasserstein(out, exact, 256, torch.Generator().manual_seed(0)))
        rows.append([name, *values])
    return table(["method \\ NFE", *map(str, NFES)], rows)


def digits_fd(n: int) -> str:
    clf = ModelDigitsClassifier().run()
    real = clf.features(digits_split("heldout")[0])  # (300, F)
    main = ModelCondition(label=None).run(ModelDigits(variant="main").run())
    flow_model = ModelDigits(variant="flow").run()
    flow = ModelCondition(label=None).run(flow_model)
    karras0 = lambda k: Karras(steps=k, sigma_min=0.002, sigma_max=80.0).run()  # noqa: E731
    flow_grid = lambda k: Normal(steps=k).run(flow_model)  # noqa: E731

    def start(s: Sigmas, seed: int = 1, count: int = n) -> torch.Tensor:
        return s.sigma_max * NoiseSource(seed).normal(torch.arange(count), -1, (8, 8))  # (N, 8, 8)

    calib = lambda s: start(s, seed=99, count=64)  # noqa: E731
    methods = {"euler": (plain(Euler()), main, karras0), "heun": (plain(Heun()), main, karras0),
               "dpmpp_2m": (plain(Dpmpp2M()), main, karras0), "unipc": (plain(UniPC()), main, karras0),
               "sa_solver (2,3) tau=0": (sa(0.0), main, karras0), "sa_solver (2,3) tau=1": (sa(1.0), main, karras0),
               "sa_solver (2,2) defaults-like, diffusers' term, tau=0": (sa(0.0, 2, 2, True), main, karras0),
               "iia(euler)": (iia(Euler(), calib), main, karras0),
               "iia(dpmpp_2m)": (iia(Dpmpp2M(), calib), main, karras0),
               "evodiff": (plain(EvoDiff()), main, karras0),
               "flow model: euler": (plain(Euler()), flow, flow_grid),
               "flow model: amo c=2": (plain(Amo(c=2.0)), flow, flow_grid),
               "flow model: amo c=0.5": (plain(Amo(c=0.5)), flow, flow_grid)}
    rows = []
    for name, (build, d, grid) in methods.items():
        values = []
        for nfe in NFES:
            out, _ = within(build, d, grid, nfe, start)
            values.append(frechet_distance(clf.features(out), real))
        rows.append([name, *values])
    return table(["method \\ NFE", *map(str, NFES)], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=512)
    parser.add_argument("--digits", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        parts = [("ODE error on the ring GMM (median distance to DOP853 at sigma 0.002; lower is better)",
                  gmm_error(args.particles)),
                 ("Sample quality on the ring GMM (sliced W2 to exact draws; lower is better)",
                  gmm_quality(4 * args.particles)),
                 (f"FD on the digits models ({args.digits} unconditional samples vs the 300 held-out digits, "
                  "classifier features; lower is better)", digits_fd(args.digits))]
    text = "# Fast solvers II: error and quality versus NFE\n\nGenerated by `python benchmarks/fast_solvers_ii.py`.\n"
    text += "".join(f"\n## {title}\n\n{body}\n" for title, body in parts)
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
