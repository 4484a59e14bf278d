"""Deterministic ODE solvers: error versus NFE on the analytic GMM (samplegraph and k-diffusion side
by side, in the same run) and the per-step overhead of the sampling loop.

    python benchmarks/solvers.py [--particles 256] [--overhead-steps 200] [--no-plot]

Error: every registered deterministic sampler (default parameters, plus DPM-Solver orders 1-2 and
dpm_adaptive over a tolerance sweep) integrates the probability-flow ODE of the 8-mode ring GMM
in float64 from sigma 80 to 0.002 on Karras (rho 7) sigmas, without the final step to 0 (so the
figure measures the ODE error, not a solver's last-step policy). Error = median over particles
of the distance to scipy's DOP853 at rtol = atol = 1e-12. k-diffusion runs the same sigmas,
noise and denoiser; its dpm_fast (its own log-uniform grid and order plan) and dpm_adaptive
(one error norm over the whole batch) are rows of their own.

Overhead: Euler on a (1, 4, 64, 64) float32 latent with the analytic denoiser x / (1 + sigma^2),
on diffusers' EulerDiscreteScheduler sigmas: samplegraph's run_steps(sampler.euler), k-diffusion's
sample_euler and diffusers' scheduler loop (scale_model_input + step), against a hand-written loop.
Writes benchmarks/results/solvers_error_vs_nfe.png (Pillow)."""
from __future__ import annotations

import argparse
import colorsys
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from scipy.integrate import solve_ivp

from samplegraph.nodes import builtin_nodes
from samplegraph.nodes.core.denoiser import CountingDenoiser, FunctionDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.core.state import bcast
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpm_adaptive import DpmAdaptive
from samplegraph.nodes.samplers.dpm_solver import DpmSolver
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.schedules.karras import Karras

from common import median_of, table

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "solvers_error_vs_nfe.png"
F64 = torch.float64
SIGMA_MAX, SIGMA_MIN = 80.0, 0.002
NFE_GRID = [8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256]  # plotted
NFE_TABLE = [16, 32, 64, 128, 256]  # tabulated (nearest point of NFE_GRID)
TOLERANCES = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5]


def k_diffusion():
    """k_diffusion.sampling via the tests' loader, or None when it is not installed."""
    sys.path.insert(0, str(ROOT / "tests"))
    from peers import kdiffusion_sampling

    try:
        return kdiffusion_sampling()
    except pytest.skip.Exception as e:
        print(f"k-diffusion columns left out: {e}")
        return None


def karras(steps: int) -> torch.Tensor:
    """`steps` Karras intervals from SIGMA_MAX to SIGMA_MIN, no final 0: (steps + 1,) float64."""
    return Karras(steps=steps + 1, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX).run().values[:-1]


def reference(model, x: torch.Tensor, sigma_max: float = SIGMA_MAX, sigma_min: float = SIGMA_MIN) -> torch.Tensor:
    """DOP853 solution of dx/dsigma = (x - D(x, sigma)) / sigma from sigma_max to sigma_min."""
    b, d = x.shape

    def rhs(sigma: float, y: np.ndarray) -> np.ndarray:
        xs = torch.from_numpy(y).reshape(b, d)
        return ((xs - model(xs, torch.full((b,), sigma, dtype=F64))) / sigma).reshape(-1).numpy()

    sol = solve_ivp(rhs, (sigma_max, sigma_min), x.reshape(-1).numpy(), method="DOP853", rtol=1e-12, atol=1e-12)
    return torch.from_numpy(sol.y[:, -1]).reshape(b, d)


def ours(sampler: Sampler) -> Callable:
    def solve(model, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return run_steps(sampler, model, sampler.init(x, Sigmas(sigmas)), NoiseSource(0)).x
    return solve


def kd_solvers(kd) -> dict[str, Callable]:
    """k-diffusion's function for each of our kinds that it has (same sigmas, noise, model)."""
    def dpm_solver_steps(model, x, sigmas):  # DPMSolver's order-3 steps on our sigmas, as sampler.dpm_solver
        solver = kd.DPMSolver(model)
        for i in range(len(sigmas) - 1):
            x = solver.dpm_solver_3_step(x, solver.t(sigmas[i]), solver.t(sigmas[i + 1]))[0]
        return x

    def no_noise(sigma, sigma_next):  # noqa: ANN001, ANN202
        raise AssertionError("eta = 0 draws no noise")

    def run(name: str, **kwargs) -> Callable:
        return lambda model, x, sigmas: getattr(kd, name)(model, x, sigmas, disable=True, **kwargs)

    return {"sampler.euler": run("sample_euler"), "sampler.heun": run("sample_heun"),
            "sampler.dpm_2": run("sample_dpm_2"), "sampler.lms": run("sample_lms"),
            "sampler.dpmpp_2m": run("sample_dpmpp_2m"),
            "sampler.dpmpp_2s": run("sample_dpmpp_2s_ancestral", eta=0.0),
            "sampler.dpmpp_3m": run("sample_dpmpp_3m_sde", eta=0.0, noise_sampler=no_noise),
            "sampler.dpm_solver": dpm_solver_steps}


def float64_default(fn: Callable) -> Callable:
    """k-diffusion's dpm_fast/adaptive build their t grid with torch.linspace/tensor (default dtype)."""
    def wrapped(*args, **kwargs):
        torch.set_default_dtype(F64)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_default_dtype(torch.float32)
    return wrapped


class RowCounter(CountingDenoiser):
    """Counts batched calls and the particles evaluated in them."""

    def __init__(self, inner):
        super().__init__(inner)
        self.rows = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return super().__call__(x, sigma)


def measure(solve: Callable, model, x: torch.Tensor, ref: torch.Tensor, sigmas: torch.Tensor | None,
            per_particle: bool = False) -> tuple:
    """(batched NFE, median error), plus mean evaluations per particle when asked."""
    counted = RowCounter(model)
    out = solve(counted, x, sigmas)
    err = float((out - ref).norm(dim=1).median())
    return (counted.calls, err, counted.rows / x.shape[0]) if per_particle else (counted.calls, err)


def error_curves(model, x, ref, kd) -> dict[str, list[tuple[int, float]]]:
    """label -> [(NFE, median error)] for every solver and implementation."""
    defaults = [cls() for cls in builtin_nodes() if isinstance(cls, type) and issubclass(cls, Sampler)]
    samplers: list[tuple[str, Sampler]] = [(s.__node_kind__.removeprefix("sampler."), s) for s in defaults
                                           if not (s.draws_noise or s.adapts_steps)]
    samplers += [("dpm_solver order 1", DpmSolver(solver_order=1)), ("dpm_solver order 2", DpmSolver(solver_order=2))]
    peers = kd_solvers(kd) if kd is not None else {}
    curves: dict[str, list[tuple[int, float]]] = {}
    for label, sampler in samplers:
        kinds = [("samplegraph", ours(sampler))]
        peer = peers.get(sampler.__node_kind__) if label == sampler.__node_kind__.removeprefix("sampler.") else None
        if peer is not None:
            kinds.append(("k-diffusion", peer))
        for impl, solve in kinds:
            points = []
            per_step = measure(ours(sampler), model, x[:1], ref[:1], karras(2))[0] / 2  # for this sampler's params
            for nfe in NFE_GRID:
                steps = max(1, round(nfe / per_step))
                try:
                    points.append(measure(solve, model, x, ref, karras(steps)))
                except Exception as e:  # a solver under construction elsewhere must not sink the table
                    print(f"{label} ({impl}) failed at {steps} steps: {e}")
                    break
            curves[f"{label} | {impl}"] = points
    if kd is not None:
        fast = float64_default(lambda model, x, nfe: kd.sample_dpm_fast(model, x, SIGMA_MIN, SIGMA_MAX, nfe,
                                                                        disable=True))
        curves["dpm_fast | k-diffusion"] = [measure(lambda m, xx, s, n=n: fast(m, xx, n), model, x, ref, None)
                                            for n in NFE_GRID]
    return curves


def adaptive_rows(model, x, ref, kd) -> tuple[list[list[object]], dict[str, list[tuple[int, float]]]]:
    """dpm_adaptive (DPM-Solver-23) over rtol = atol: ours per particle, k-diffusion batch-wide."""
    rows, ours_pts, kd_pts = [], [], []
    endpoints = torch.tensor([SIGMA_MAX, SIGMA_MIN], dtype=F64)
    for tol in TOLERANCES:
        nfe, err, evals = measure(ours(DpmAdaptive(rtol=tol, atol=tol)), model, x, ref, endpoints, True)
        ours_pts.append((nfe, err))
        row = [f"{tol:g}", nfe, round(evals, 1), err]
        if kd is not None:
            run = float64_default(lambda m, xx, s: kd.sample_dpm_adaptive(m, xx, SIGMA_MIN, SIGMA_MAX, rtol=tol,
                                                                          atol=tol, disable=True))
            kd_nfe, kd_err = measure(run, model, x, ref, endpoints)
            kd_pts.append((kd_nfe, kd_err))
            row += [kd_nfe, kd_err]
        rows.append(row)
    curves = {"dpm_adaptive (per particle) | samplegraph": ours_pts}
    if kd_pts:
        curves["dpm_adaptive (batch norm) | k-diffusion"] = kd_pts
    return rows, curves


def error_table(curves: dict[str, list[tuple[int, float]]]) -> str:
    rows = []
    for label, points in curves.items():
        if not points:
            continue
        solver, impl = label.split(" | ")
        cells = []
        for target in NFE_TABLE:
            nfe, err = min(points, key=lambda p: abs(math.log(p[0] / target)))
            cells.append(f"{err:.2e}" + ("" if nfe == target else f" ({nfe})"))
        tail = [p for p in points if p[0] >= 32 and p[1] > 0]
        slope = -np.polyfit(np.log([p[0] for p in tail]), np.log([p[1] for p in tail]), 1)[0] if len(tail) > 1 else 0.0
        rows.append([solver, impl, *cells, f"{slope:.2f}"])
    return table(["solver", "implementation", *[f"NFE {n}" for n in NFE_TABLE], "slope (NFE >= 32)"], rows)


def overhead(steps: int) -> str:
    """Per-step time of each Euler loop on a (1, 4, 64, 64) latent; overhead over the hand loop."""
    try:
        from diffusers import EulerDiscreteScheduler
        sched = EulerDiscreteScheduler()
        sched.set_timesteps(steps)
        sig32 = sched.sigmas.clone()  # (steps + 1,) float32, ending in 0
    except ImportError:
        print("diffusers row left out: diffusers is not installed")
        sched, sig32 = None, Karras(steps=steps, sigma_min=0.0292, sigma_max=14.6146).run().values.float()
    x_start = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0)) * sig32[0]

    def analytic(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x / (1 + bcast(sigma, x) ** 2)

    def hand() -> torch.Tensor:
        x = x_start
        for i in range(steps):
            denoised = analytic(x, sig32[i].expand(1))
            x = x + (x - denoised) / sig32[i] * (sig32[i + 1] - sig32[i])
        return x

    sampler, sigmas, den, noise = Euler(), Sigmas(sig32.double()), FunctionDenoiser(analytic), NoiseSource(0)

    def samplegraph() -> torch.Tensor:
        return run_steps(sampler, den, sampler.init(x_start, sigmas), noise).x

    def diffusers_loop() -> torch.Tensor:
        sched.set_timesteps(steps)
        x = x_start
        for i, t in enumerate(sched.timesteps):
            sched.scale_model_input(x, t)  # part of the loop's cost; an eps-model would be fed its result
            sigma = sched.sigmas[i]
            eps = (x - analytic(x, sigma.expand(1))) / sigma  # the eps such a model would return
            x = sched.step(eps, t, x).prev_sample
        return x

    loops = [("hand-written loop", hand), ("samplegraph run_steps + sampler.euler", samplegraph)]
    kd = k_diffusion()
    if kd is not None:
        loops.append(("k-diffusion sample_euler", lambda: kd.sample_euler(analytic, x_start, sig32, disable=True)))
    if sched is not None:
        loops.append(("diffusers EulerDiscreteScheduler loop", diffusers_loop))
    results = {name: fn() for name, fn in loops}
    agree = all(torch.allclose(v, results["hand-written loop"], rtol=1e-4, atol=1e-4) for v in results.values())
    per_step = {name: median_of(fn, repeat=7) / steps * 1e6 for name, fn in loops}
    floor, ours_us = per_step["hand-written loop"], per_step["samplegraph run_steps + sampler.euler"]
    rows = [[name, us, us - floor, "-" if us == floor else (ours_us - floor) / (us - floor), ours_us / us]
            for name, us in per_step.items()]
    head = (f"Euler, {steps} steps on diffusers' sigmas, (1, 4, 64, 64) float32, torch threads "
            f"{torch.get_num_threads()}; all loops give the same x: {agree}")
    return head + "\n" + table(["loop", "µs/step", "overhead µs/step (over hand loop)",
                                "samplegraph overhead / this", "samplegraph µs / this"], rows)


def plot(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """Log-log error versus NFE; samplegraph solid with dots, k-diffusion dashed with crosses."""
    w, h, left, top, right, bottom = 1280, 820, 90, 50, 420, 70
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=14)
    pts = [p for v in curves.values() for p in v if p[1] > 0]
    x_lo, x_hi = math.log10(min(p[0] for p in pts)) - 0.05, math.log10(max(p[0] for p in pts)) + 0.05
    y_lo, y_hi = math.floor(math.log10(min(p[1] for p in pts))), math.ceil(math.log10(max(p[1] for p in pts)))
    pw, ph = w - left - right, h - top - bottom

    def at(nfe: float, err: float) -> tuple[float, float]:
        return (left + (math.log10(nfe) - x_lo) / (x_hi - x_lo) * pw,
                top + (y_hi - math.log10(err)) / (y_hi - y_lo) * ph)

    for e in range(y_lo, y_hi + 1):
        y = at(10, 10.0 ** e)[1]
        draw.line([(left, y), (left + pw, y)], fill=(225, 225, 225))
        draw.text((left - 8, y), f"1e{e}", fill="black", font=font, anchor="rm")
    for n in NFE_GRID:
        x = at(n, 1)[0]
        draw.line([(x, top), (x, top + ph)], fill=(235, 235, 235))
        draw.text((x, top + ph + 8), str(n), fill="black", font=font, anchor="mt")
    draw.rectangle([left, top, left + pw, top + ph], outline="black")
    draw.text((left + pw / 2, h - 22), "NFE (denoiser evaluations)", fill="black", font=font, anchor="mm")
    draw.text((left + pw / 2, 22), "Median error vs DOP853 on the 8-mode GMM, float64, Karras sigmas 80 -> 0.002",
              fill="black", font=font, anchor="mm")
    draw.text((12, top - 20), "error", fill="black", font=font)
    solvers = sorted({label.split(" | ")[0] for label in curves})
    color = {s: tuple(round(255 * c) for c in colorsys.hsv_to_rgb(i / len(solvers), 0.9, 0.85 - 0.3 * (i % 2)))
             for i, s in enumerate(solvers)}  # distinct hues; alternate shades
    legend_y = top
    for label, points in curves.items():
        solver, impl = label.split(" | ")
        xy = [at(n, e) for n, e in sorted(points) if e > 0]
        dashed = impl != "samplegraph"
        for a, b in zip(xy, xy[1:]):
            dashed_line(draw, a, b, color[solver], 2, dashed)
        for px, py in xy:
            if dashed:
                draw.line([(px - 4, py - 4), (px + 4, py + 4)], fill=color[solver], width=2)
                draw.line([(px - 4, py + 4), (px + 4, py - 4)], fill=color[solver], width=2)
            else:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color[solver])
        lx = left + pw + 20
        dashed_line(draw, (lx, legend_y + 8), (lx + 36, legend_y + 8), color[solver], 2, dashed)
        draw.text((lx + 44, legend_y + 8), label.replace(" | ", " - "), fill="black", font=font, anchor="lm")
        legend_y += 22
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def dashed_line(draw: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float],
                color: tuple[int, int, int], width: int, dashed: bool) -> None:
    if not dashed:
        draw.line([a, b], fill=color, width=width)
        return
    length = math.dist(a, b)
    for s in np.arange(0, length, 12):
        u, v = s / length, min(s + 7, length) / length
        draw.line([(a[0] + u * (b[0] - a[0]), a[1] + u * (b[1] - a[1])),
                   (a[0] + v * (b[0] - a[0]), a[1] + v * (b[1] - a[1]))], fill=color, width=width)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--particles", type=int, default=256)
    ap.add_argument("--overhead-steps", type=int, default=200)
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = ModelGMM().run()
    x = SIGMA_MAX * torch.randn(args.particles, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = reference(model, x)
    kd = k_diffusion()
    curves = error_curves(model, x, ref, kd)
    rows, adaptive = adaptive_rows(model, x, ref, kd)
    print(f"Median error vs DOP853 (rtol = atol = 1e-12), {args.particles} particles, float64, Karras sigmas "
          f"{SIGMA_MAX} -> {SIGMA_MIN} (no final step to 0); (n) = actual NFE where it differs")
    print(error_table(curves))
    print()
    print("dpm_adaptive (DPM-Solver-23, rtol = atol = tol, one interval 80 -> 0.002): samplegraph controls each "
          "particle, k-diffusion the batch")
    print(table(["tol", "NFE samplegraph (batched calls)", "evaluations / particle", "error samplegraph",
                 "NFE k-diffusion", "error k-diffusion"], rows))
    print()
    print(overhead(args.overhead_steps))
    if not args.no_plot:
        plot({**curves, **adaptive}, OUT)
        print(f"\nplot: {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
