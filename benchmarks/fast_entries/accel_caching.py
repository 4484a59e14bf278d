"""Training-free acceleration by reuse (helper acc's nodes/accel) in benchmarks/fast.py, each on DPM++ 2M over
the same Karras sigmas and compared with plain DPM++ 2M: block step caching (reuse a block's output while its
input's relative L1 change stays under a threshold; gated by SADA's stability criterion) and DeepCache
(a full call every `interval` calls, the shallow blocks always). NFE counts the wrapper's calls as full
evaluations (what run_steps sees), so the saving shows in the wall time, not the NFE."""
from fast_core import Entry, Slot, solver_fragment

IMAGES = ("digits", "dit", "mnist")  # networks with blocks; the GMM's exact denoiser has none


def wrapped(kind: str, params: dict):
    def build(slot: Slot) -> dict:
        return {"cached": {"kind": kind, "params": params, "inputs": {"model": slot.denoise}},
                **solver_fragment(slot, "sampler.dpmpp_2m", denoise="cached")}
    return build


ENTRIES = [
    Entry("step cache (SADA, 0.1) + DPM++ 2M", "accel", ("model.step_cache", "sampler.dpmpp_2m"),
          wrapped("model.step_cache", {"threshold": 0.1, "criterion": "sada"}), IMAGES, versus="DPM++ 2M"),
    Entry("step cache (rel-L1, 0.05) + DPM++ 2M", "accel", ("model.step_cache", "sampler.dpmpp_2m"),
          wrapped("model.step_cache", {"threshold": 0.05, "criterion": "rel_l1"}), IMAGES, versus="DPM++ 2M"),
    Entry("DeepCache (interval 3, shallow 1) + DPM++ 2M", "accel", ("model.deep_cache", "sampler.dpmpp_2m"),
          wrapped("model.deep_cache", {"interval": 3, "shallow": 1}), IMAGES, versus="DPM++ 2M"),
]
