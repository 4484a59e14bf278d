"""GITS time schedules (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling";
schedule.gits, helper sch) in benchmarks/fast.py: the dynamic-programming schedule fitted once per model
(on the unconditional denoiser; calibration noise seed 1, the evaluation uses seed 0), under DPM++ 2M and iPNDM
(the paper's main pairing), each compared with the same solver on Karras sigmas."""
from fast_core import Entry, Nodes, Slot, solver_fragment, unconditional

CAL_SEED = 1


def fragment(slot: Slot, kind: str) -> Nodes:
    """schedule.gits with slot.steps jumps over a 60-level Karras teacher grid of the model's range, fitted
    once per model on its unconditional denoiser (as the paper fits one schedule per dataset), then `kind`."""
    cal, denoise = unconditional(slot)
    particles = 128 if slot.model == "gmm" else 64
    gits = {"kind": "schedule.gits",
            "params": {"steps": slot.steps, "grid": 60, "particles": particles, "shape": list(slot.shape),
                       "seed": CAL_SEED, "sigma_min": slot.sigma_min, "sigma_max": slot.sigma_max},
            "inputs": {"denoise": denoise}}
    return {**cal, **solver_fragment(slot, kind, sigmas=gits)}


def entry(solver: str, kind: str, versus: str) -> Entry:
    return Entry(f"GITS + {solver}", "schedule", ("schedule.gits", kind), lambda slot: fragment(slot, kind),
                 versus=versus, note="calibration: Euler teacher on a 60-level grid, 128 (gmm) / 64 (images, "
                                     "unconditional model) particles, not counted in NFE by the node; its wall "
                                     "is the row's calibration s")


ENTRIES = [entry("DPM++ 2M", "sampler.dpmpp_2m", "DPM++ 2M"), entry("iPNDM", "sampler.ipndm", "iPNDM (order 4)")]
