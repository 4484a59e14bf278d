"""Per-step solver and step-time search (sampler.plan_search, helper sch; in the spirit of Liu et al. 2023,
"A Unified Sampling Framework for Solver Searching of Diffusion Probabilistic Models") in
benchmarks/fast.py: the configuration found for the budget on calibration noise (seed 1) over Euler,
Heun, DPM++ 2M and iPNDM, then sampled on the evaluation noise (seed 0) as its sampler (sampler.from_plan)
and sigmas."""
from fast_core import Entry, Slot, unconditional

CANDIDATES = {"c_euler": "sampler.euler", "c_heun": "sampler.heun", "c_dpmpp": "sampler.dpmpp_2m",
              "c_ipndm": "sampler.ipndm"}
MAX_BUDGET = 20  # the search evaluates ~(3 + 2) x budget configurations per round: beyond 20 NFE too costly here


def build(slot: Slot) -> dict:
    particles, rounds = (64, 2) if slot.model == "gmm" else (32, 1)
    cal, denoise = unconditional(slot)  # one configuration per model and budget, as USF searches per dataset
    nodes = {**cal, **{name: {"kind": kind} for name, kind in CANDIDATES.items()}}
    nodes["search"] = {"kind": "sampler.plan_search",
                       "params": {"nfe": slot.budget, "rounds": rounds, "particles": particles,
                                  "shape": list(slot.shape), "seed": 1, "sigma_min": slot.sigma_min,
                                  "sigma_max": slot.sigma_max},
                       "inputs": {"denoise": denoise, "samplers": list(CANDIDATES)}}
    nodes["found"] = {"kind": "sampler.from_plan", "inputs": {"plan": "search.plan", "samplers": list(CANDIDATES)}}
    nodes["sample"] = {"kind": "sample", "inputs": {"denoise": slot.denoise, "sigmas": "search.sigmas",
                                                    "sampler": "found", "latent": "latent"}}
    return nodes


KINDS = ("sampler.plan_search", "sampler.from_plan", *CANDIDATES.values())
ENTRIES = [Entry("plan search (Euler/Heun/DPM++ 2M/iPNDM)", "schedule", KINDS,
                 build, steps=lambda budget: budget, versus="DPM++ 2M",
                 max_nfe={"gmm": MAX_BUDGET, "digits": MAX_BUDGET, "dit": 10, "mnist": 10},
                 note=f"budgets <= {MAX_BUDGET} (gmm, digits) / 10 (dit, mnist) only (search cost); calibration "
                      "64 particles x 2 rounds (gmm), "
                      "32 x 1 (images, unconditional model) against a 200-step Heun solve; the search's own solves "
                      "are not "
                      "counted in NFE")]
