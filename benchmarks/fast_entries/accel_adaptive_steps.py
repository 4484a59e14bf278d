"""AdaptiveDiffusion (Ye et al. 2024: training-free per-particle step skipping over Euler steps;
sample.adaptive_steps, helper sch) in benchmarks/fast.py, compared with Euler on the same Karras sigmas.
The step count is fitted so that one particle's calls fit the budget (the batch-1 probe); the table's NFE is
the batched calls of the real run (a call is made when any particle needs one), shown where it differs."""
from fast_core import Entry, Slot, karras

THRESHOLD = 0.05


def build(slot: Slot) -> dict:
    return {"sigmas": karras(slot),
            "sample": {"kind": "sample.adaptive_steps", "params": {"threshold": THRESHOLD},
                       "inputs": {"denoise": slot.denoise, "sigmas": "sigmas", "latent": "latent"}}}


ENTRIES = [Entry(f"AdaptiveDiffusion (Euler, threshold {THRESHOLD:g})", "accel", ("sample.adaptive_steps",), build,
                 versus="Euler", note="steps fitted to one particle's calls; NFE = batched calls of the whole batch")]
