"""Region-adaptive sampling (Liu et al. 2025, RAS; model.ras, helper dit) in benchmarks/fast.py, on the DiT only
(it selects patch tokens): Euler (the authors' scheduler) with a fraction of tokens recomputed per call,
versus plain Euler on the same sigmas. The dense calls follow the authors' proportions for 30 steps (the
first 4 dense, error resets at 12 and 22), scaled to the step count."""
from fast_core import Entry, Slot, solver_fragment


def ras(ratio: float):
    def build(slot: Slot) -> dict:
        n = slot.steps
        resets = sorted({round(n * 12 / 30), round(n * 22 / 30)} - {0}) if n >= 8 else []
        params = {"ratio": ratio, "dense_calls": max(1, round(n * 4 / 30)), "dense_at": resets}
        return {"ras": {"kind": "model.ras", "params": params, "inputs": {"model": slot.denoise}},
                **solver_fragment(slot, "sampler.euler", denoise="ras")}
    return build


ENTRIES = [Entry(f"RAS (ratio {r:g}) + Euler", "accel", ("model.ras", "sampler.euler"), ras(r), ("dit",),
                 versus="Euler", note="NFE counts every call as one, however many tokens it recomputed")
           for r in (0.5, 0.25)]
