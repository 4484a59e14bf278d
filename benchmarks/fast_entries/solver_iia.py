"""IIA (Zhang, Niwa and Kleijn 2023, improved integration approximation; sampler.iia_fit, helper s2) in
benchmarks/fast.py: coefficients fitted per budget on calibration noise (seed 1; the unconditional model for
the class models) against a 16-sub-step integration, around DPM++ 2M and Euler, versus each base solver."""
from fast_core import Entry, Slot, solver_fragment, unconditional


def fitted(base: str):
    def build(slot: Slot) -> dict:
        cal, denoise = unconditional(slot)
        particles = 64 if slot.model == "gmm" else 32
        nodes = solver_fragment(slot, "sampler.iia_fit", denoise=slot.denoise)
        nodes["base"] = {"kind": base}
        nodes["solver"] = {"kind": "sampler.iia_fit",
                           "params": {"shape": list(slot.shape), "particles": particles, "fine_steps": 16, "seed": 1},
                           "inputs": {"sampler": "base", "denoise": denoise, "sigmas": "sigmas"}}
        return {**cal, **nodes}
    return build


ENTRIES = [
    Entry("IIA + DPM++ 2M", "solver", ("sampler.iia_fit", "sampler.dpmpp_2m"), fitted("sampler.dpmpp_2m"),
          versus="DPM++ 2M", note="calibration: 64 (gmm) / 32 (images) trajectories, 16 sub-steps per step"),
    Entry("IIA + Euler", "solver", ("sampler.iia_fit", "sampler.euler"), fitted("sampler.euler"), versus="Euler"),
]
