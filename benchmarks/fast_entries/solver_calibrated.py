"""The calibrated solvers of helper s1 in benchmarks/fast.py, on the image models (their calibration needs data
or trajectories of a network; the GMM has exact denoisers and no data node):
- DPM-Solver-v3 (Zheng et al. 2023): empirical model statistics (EMS) computed once per model by
  sampler.dpm_solver_v3_statistics on the unconditional model and clean training images (grid 60, 128 images
  on digits, 32 on the 28x28 models, 1 probe), versus the same solver without statistics (DPM-Solver++ multistep);
- DC-Solver (Zhao et al. 2024): UniPC-3 with dynamic compensation, ratios calibrated per budget on 4
  trajectories of the unconditional model (sampler.dc_solver_calibrate, 10 sub-steps), versus the base
  solver uncalibrated. The calibration latents are particles 0-3 of latent.noise under the run's seed, as in
  workflows/dc_solver.json (4 of the evaluation's initial noises; their trajectories are unconditional)."""
from fast_core import Entry, Slot, solver_fragment, unconditional

IMAGES = ("digits", "dit", "mnist")
DATA = {"digits": "data.digits", "dit": "data.mnist", "mnist": "data.mnist"}


def ems_samples(slot: Slot) -> int:
    """Training images of the statistics: 128 on digits, 32 on the 28x28 models (a DiT call costs ~30x more)."""
    return 128 if slot.model == "digits" else 32


def v3(slot: Slot) -> dict:
    cal, denoise = unconditional(slot)
    nodes = solver_fragment(slot, "sampler.dpm_solver_v3", {"solver_order": 2})
    nodes["solver"]["inputs"] = {"statistics": "v3_stats"}
    return {**cal, **nodes,
            "v3_data": {"kind": DATA[slot.model], "params": {"split": "train"}},
            "v3_stats": {"kind": "sampler.dpm_solver_v3_statistics",
                         "params": {"grid": 60, "samples": ems_samples(slot), "probes": 1,
                                    "sigma_min": slot.sigma_min, "sigma_max": slot.sigma_max},
                         "inputs": {"denoise": denoise, "data": "v3_data.images"}}}


def dc(slot: Slot) -> dict:
    cal, denoise = unconditional(slot)
    nodes = solver_fragment(slot, "sampler.dc_solver", {"solver_order": 3, "dc_order": 2})
    nodes["solver"]["inputs"] = {"calibration": "dc_ratios"}
    return {**cal, **nodes,
            "dc_base": {"kind": "sampler.dc_solver", "params": {"solver_order": 3, "dc_order": 2}},
            "dc_noise": {"kind": "latent.noise", "params": {"batch": 4, "shape": list(slot.shape)},
                         "inputs": {"sigmas": "sigmas"}},
            "dc_ratios": {"kind": "sampler.dc_solver_calibrate", "params": {"substeps": 10},
                          "inputs": {"denoise": denoise, "sigmas": "sigmas", "latent": "dc_noise",
                                     "sampler": "dc_base"}}}


V3 = ("sampler.dpm_solver_v3", "sampler.dpm_solver_v3_statistics")
DC = ("sampler.dc_solver", "sampler.dc_solver_calibrate")
ENTRIES = [
    Entry("DPM-Solver-v3 (order 2, no EMS)", "solver", V3[:1],
          lambda slot: solver_fragment(slot, "sampler.dpm_solver_v3", {"solver_order": 2}), IMAGES),
    Entry("DPM-Solver-v3 (order 2, EMS)", "solver", (*V3, "data.digits", "data.mnist"), v3, IMAGES,
          versus="DPM-Solver-v3 (order 2, no EMS)",
          note="EMS once per model: grid 60, 128 (digits) / 32 (28x28) training images, 1 probe"),
    Entry("DC-Solver base (UniPC-3, no calibration)", "solver", DC[:1],
          lambda slot: solver_fragment(slot, "sampler.dc_solver", {"solver_order": 3, "dc_order": 2}), IMAGES),
    Entry("DC-Solver (UniPC-3, calibrated)", "solver", DC, dc, ("digits",),
          versus="DC-Solver base (UniPC-3, no calibration)",
          note="ratios per budget and class seed, 4 unconditional trajectories, 10 sub-steps; digits only: "
               "its calibration took 280 s there (all budgets), a DiT call costs ~30x more"),
]
