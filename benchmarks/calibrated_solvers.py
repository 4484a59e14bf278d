"""Calibrated solvers: DPM-Solver-v3 (with and without its empirical model statistics) and DC-Solver against
DPM-Solver++(2M) and UniPC at 5, 8, 10, 15, 20 NFE, in one run.

    python benchmarks/calibrated_solvers.py [--particles 512] [--out benchmarks/results/calibrated_solvers.md]

model.gmm (ring, exact denoiser, float64): mean L2 error at sigma 0.002 to DOP853 (rtol 1e-11) from the same
starts. Digits (model.digits, unconditional): mean L2 error to a 400-step UniPC-3 solve from the same noise,
and FD to the 300 held-out images in model.digits_classifier's features. Karras schedules 80 -> 0.002
(no final step to 0: every method spends exactly NFE evaluations). EMS: grid 200, 512 data points (GMM:
exact samples; digits: the train split). DC-Solver: UniPC-2 (+UniC) ratios calibrated per NFE on 8
trajectories whose starts are not among the evaluated ones."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.data.digits import digits_split
from samplegraph.nodes.metrics.common import frechet_distance
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.digits_classifier import ModelDigitsClassifier
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dc_solver import DcSolver
from samplegraph.nodes.samplers.dc_solver_calibrate import DcSolverCalibrate, ground_truth
from samplegraph.nodes.samplers.dpm_solver_v3 import DpmSolverV3
from samplegraph.nodes.samplers.dpm_solver_v3_statistics import DpmSolverV3Statistics
from samplegraph.nodes.samplers.dpmpp_2m import Dpmpp2M
from samplegraph.nodes.samplers.unipc import UniPC
from samplegraph.nodes.schedules.karras import Karras

from common import table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers_calibrated import dop853  # noqa: E402

NFES = [5, 8, 10, 15, 20]
SIGMA_MAX, SIGMA_MIN = 80.0, 0.002


def karras(steps: int) -> Sigmas:
    return Sigmas(Karras(steps=steps + 1, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX).run().values[:-1])


def solve(sampler: Sampler, model, x: torch.Tensor, sigmas: Sigmas) -> torch.Tensor:
    return run_steps(sampler, model, sampler.init(x, sigmas), NoiseSource(0)).x


def statistics(model, data: torch.Tensor):  # noqa: ANN201
    return DpmSolverV3Statistics(samples=512).run(model, data, NodeContext.detached(seed=0))


def methods(model, stats, calibration: torch.Tensor, steps: int) -> dict[str, Sampler]:
    """Every compared sampler for one NFE (DC-Solver calibrated for that schedule)."""
    dc = DcSolver(solver_order=2, dc_order=2)
    ratios = DcSolverCalibrate().run(model, karras(steps), calibration, dc)
    return {"dpmpp_2m": Dpmpp2M(), "unipc (UniP-2 + UniC)": UniPC(), "unipc (UniP-3 + UniC)": UniPC(solver_order=3),
            "dpm_solver_v3, no EMS": DpmSolverV3().run(),
            "dpm_solver_v3 + EMS (order 2 + corrector)": DpmSolverV3().run(stats),
            "dpm_solver_v3 + EMS, order 1 + pseudo corrector": DpmSolverV3(solver_order=1,
                                                                            corrector_pseudo=True).run(stats),
            "dpm_solver_v3 + EMS, order 3": DpmSolverV3(solver_order=3).run(stats),
            "dc_solver (UniPC-2, calibrated)": dc.run(ratios)}


def gmm_table(particles: int) -> str:
    model = ModelGMM().run()
    data = model.sample(512, torch.Generator().manual_seed(1))
    x = SIGMA_MAX * torch.randn(particles, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cal = SIGMA_MAX * torch.randn(8, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    reference = dop853(model, x, SIGMA_MAX, SIGMA_MIN)
    rows: dict[str, list[float]] = {}
    stats = statistics(model, data)
    for n in NFES:
        for name, sampler in methods(model, stats, cal, n).items():
            rows.setdefault(name, []).append(float((solve(sampler, model, x, karras(n)) - reference).norm(dim=1).mean()))
    return table(["model.gmm: mean L2 error to DOP853", *[f"{n} NFE" for n in NFES]],
                 [[k, *v] for k, v in rows.items()])


def digits_tables(particles: int) -> tuple[str, str]:
    model = ModelCondition(label=None).run(ModelDigits().run())
    data, _ = digits_split("train")
    held, _ = digits_split("heldout")
    clf = ModelDigitsClassifier().run()
    ref_features = clf.features(held)
    x = SIGMA_MAX * NoiseSource(0).normal(torch.arange(particles), 0, (8, 8))  # (B, 8, 8)
    cal = SIGMA_MAX * NoiseSource(1).normal(torch.arange(8), 0, (8, 8))  # (8, 8, 8)
    with torch.no_grad():
        reference = ground_truth(model, x, karras(1), 400)[-1]  # 400 UniPC-3 steps, 80 -> 0.002
    err: dict[str, list[float]] = {}
    fd: dict[str, list[float]] = {}
    stats = statistics(model, data)
    for n in NFES:
        for name, sampler in methods(model, stats, cal, n).items():
            with torch.no_grad():
                out = solve(sampler, model, x, karras(n))
            err.setdefault(name, []).append(float((out - reference).flatten(1).norm(dim=1).mean()))
            fd.setdefault(name, []).append(frechet_distance(clf.features(out.clamp(-1, 1)), ref_features))
    base = frechet_distance(clf.features(reference.clamp(-1, 1)), ref_features)
    fd["400-step UniPC-3 reference"] = [base] * len(NFES)
    heads = [f"{n} NFE" for n in NFES]
    return (table(["digits: mean L2 error to 400-step UniPC-3", *heads], [[k, *v] for k, v in err.items()]),
            table(["digits: FD to held-out (classifier features)", *heads], [[k, *v] for k, v in fd.items()]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=512)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/calibrated_solvers.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gmm = gmm_table(args.particles)
    print(gmm, flush=True)
    err, fd = digits_tables(args.particles)
    print(err, fd, sep="\n\n")
    args.out.write_text(f"# Calibrated solvers\n\n`python benchmarks/calibrated_solvers.py --particles {args.particles}`"
                        f"\n\n{gmm}\n\n{err}\n\n{fd}\n")


if __name__ == "__main__":
    main()
