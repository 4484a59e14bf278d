"""Align Your Steps' own optimisation (Sabour et al. 2024: KLUB coordinate search; schedule.ays_optimize,
helper sch) in benchmarks/fast.py: levels optimised per budget on the unconditional model against clean
training data (data.digits / data.mnist train split; the GMM's exact distribution), under DPM++ 2M."""
from fast_core import Entry, Slot, solver_fragment, unconditional

DATA = {"digits": "data.digits", "dit": "data.mnist", "mnist": "data.mnist"}


def build(slot: Slot) -> dict:
    cal, denoise = unconditional(slot)
    inputs = {"denoise": denoise}
    if slot.model == "gmm":
        inputs["reference"] = slot.model_node
    else:
        cal["ays_data"] = {"kind": DATA[slot.model], "params": {"split": "train"}}
        inputs["data"] = "ays_data.images"
    sigmas = {"kind": "schedule.ays_optimize",
              "params": {"steps": max(2, slot.steps), "particles": 64, "iterations": 4, "seed": 1,
                         "sigma_min": slot.sigma_min, "sigma_max": slot.sigma_max},
              "inputs": inputs}
    return {**cal, **solver_fragment(slot, "sampler.dpmpp_2m", sigmas=sigmas)}


ENTRIES = [Entry("AYS-optimised + DPM++ 2M", "schedule", ("schedule.ays_optimize", "sampler.dpmpp_2m"), build,
                 ("gmm", "digits"), versus="DPM++ 2M", max_nfe={"gmm": 20, "digits": 10},
                 note="KLUB search, 64 clean samples, 4 sweeps, seed 1; budgets <= 20 (gmm) / 10 (digits) and not on "
                      "the DiT: the search took ~45 CPU s for 5 + 10 NFE on digits, and a DiT call costs ~30x more")]
