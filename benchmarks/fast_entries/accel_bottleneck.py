"""Bottleneck sampling (Tian et al. 2025: high-low-high resolution stages with noise reintroduction;
sample.bottleneck, helper dit) in benchmarks/fast.py, on the DiT (trained on 28 x 28 and 16 x 16): Euler
over Karras sigmas cut 4 : 10 : 4 (the node's default proportions) into stages at sides 28, 16, 28, lift 1.5,
versus plain Euler. `cost_fraction` = the pixels (tokens) evaluated over the dense run's."""
from fast_core import Entry, Slot, karras


def stages(steps: int) -> list[int]:
    """The step counts of the three stages: 4 : 10 : 4 of `steps`, each at least 1."""
    edge = max(1, round(steps * 4 / 18))
    return [edge, steps - 2 * edge, edge]


def build(slot: Slot) -> dict:
    return {"sigmas": karras(slot), "solver": {"kind": "sampler.euler"},
            "sample": {"kind": "sample.bottleneck",
                       "params": {"sizes": [28, 16, 28], "steps": stages(slot.steps), "lift": 1.5},
                       "inputs": {"denoise": slot.denoise, "sigmas": "sigmas", "sampler": "solver",
                                  "latent": "latent"}}}


ENTRIES = [Entry("bottleneck 28-16-28 + Euler", "accel", ("sample.bottleneck", "sampler.euler"), build, ("dit",),
                 versus="Euler", show=("cost_fraction",),
                 note="NFE includes the x0 estimates at the resolution changes; fewer than 3 steps: n/a")]
