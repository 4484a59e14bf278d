"""T-Stitch and ParaDiGMS (helper acc's nodes/accel) in benchmarks/fast.py.
- T-Stitch (Pan et al. 2024): the small model denoises above sigma 2, the large one below (model.stitch), on
  DPM++ 2M, versus plain DPM++ 2M. digits only: its small model is model.digits variant "weak".
- ParaDiGMS (Shih et al. 2023): Picard iterations over a sliding window of Euler steps (sample.paradigms,
  window 8, tolerance 0.01), on as many Euler steps as the budget (the Euler row's configuration), versus
  Euler: it converges to Euler's output with more evaluations (NFE column) in fewer sequential rounds."""
from fast_core import Entry, Slot, karras, solver_fragment

SWITCH_SIGMA = 2.0


def stitch(slot: Slot) -> dict:
    return {"ts_small_net": {"kind": "model.digits", "params": {"variant": "weak"}},
            "ts_small": {"kind": "model.condition", "params": {"label": slot.label},
                         "inputs": {"model": "ts_small_net"}},
            "stitched": {"kind": "model.stitch", "params": {"switch_sigma": SWITCH_SIGMA},
                         "inputs": {"small": "ts_small", "large": slot.denoise}},
            **solver_fragment(slot, "sampler.dpmpp_2m", denoise="stitched")}


def paradigms(slot: Slot) -> dict:
    return {"sigmas": karras(slot),
            "sample": {"kind": "sample.paradigms", "params": {"window": 8, "tolerance": 0.01, "step": "euler"},
                       "inputs": {"denoise": slot.denoise, "sigmas": "sigmas", "latent": "latent"}}}


ENTRIES = [
    Entry(f"T-Stitch (weak digits above sigma {SWITCH_SIGMA:g}) + DPM++ 2M", "accel",
          ("model.stitch", "model.digits", "sampler.dpmpp_2m"), stitch, ("digits",), versus="DPM++ 2M",
          note="the small model is model.digits variant 'weak' (same network size here: no cheaper calls)"),
    Entry("ParaDiGMS (Euler, window 8, tol 0.01)", "accel", ("sample.paradigms",), paradigms,
          steps=lambda budget: budget, versus="Euler", show=("rounds",),
          note="steps = the budget (Euler's); NFE = all evaluations; rounds = sequential batched calls, the "
               "latency with parallel compute (one CPU thread here runs them one after another)"),
]
