"""Baselines of benchmarks/fast.py: Euler, Heun, DPM++ 2M and UniPC on Karras sigmas (rho 7)."""
from fast_core import solver_entry

ENTRIES = [
    solver_entry("Euler", "baseline", "sampler.euler"),
    solver_entry("Heun", "baseline", "sampler.heun"),
    solver_entry("DPM++ 2M", "baseline", "sampler.dpmpp_2m"),
    solver_entry("UniPC (bh2, order 2)", "baseline", "sampler.unipc"),
]
