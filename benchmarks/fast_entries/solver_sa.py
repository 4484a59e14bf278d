"""SA-Solver (Xue et al. 2023, stochastic Adams; sampler.sa_solver, helper s2) in benchmarks/fast.py: the
paper's stochastic setting (tau 1, predictor and corrector order 2) on the image models, and its
probability-flow limit (tau 0) everywhere."""
from fast_core import solver_entry

ENTRIES = [
    solver_entry("SA-Solver (tau 1, p2 c2)", "solver", "sampler.sa_solver", {"tau": 1.0},
                 models=("digits", "dit", "mnist"), note="stochastic (tau 1): image models only"),
    solver_entry("SA-Solver (tau 0, p2 c2)", "solver", "sampler.sa_solver", {"tau": 0.0},
                 versus="UniPC (bh2, order 2)"),
]
