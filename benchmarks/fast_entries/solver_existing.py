"""The library's other fast solvers in benchmarks/fast.py, on Karras sigmas with their default settings
(stochastic ones on the image models only: their GMM error to the ODE solution would measure the noise)."""
from fast_core import solver_entry

IMAGES = ("digits", "dit", "mnist")

ENTRIES = [
    solver_entry("iPNDM (order 4)", "solver", "sampler.ipndm"),
    solver_entry("DEIS (order 2)", "solver", "sampler.deis"),
    solver_entry("DEIS (order 3)", "solver", "sampler.deis", {"solver_order": 3}),
    solver_entry("DPM++ 3M", "solver", "sampler.dpmpp_3m"),
    solver_entry("UniPC (bh2, order 3)", "solver", "sampler.unipc", {"solver_order": 3}),
    solver_entry("PNDM (PRK warm start)", "solver", "sampler.pndm"),
    solver_entry("HB (PLMS, beta 0.8)", "solver", "sampler.hb"),
    solver_entry("GHVB (order 2, beta 0.8)", "solver", "sampler.ghvb"),
    solver_entry("ER-SDE (order 3, SDE-5)", "solver", "sampler.er_sde", models=IMAGES,
                 note="stochastic (SDE) solver: image models only"),
]
