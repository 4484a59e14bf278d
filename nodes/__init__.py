"""Node plugins, one role per folder. `builtin_nodes()` is the explicit list of built-ins."""
from __future__ import annotations


def builtin_nodes() -> list[type]:
    """Every built-in node class (imported here, so nothing scans folders)."""
    from .io.plot_samples import PlotSamples
    from .io.save_tensor import SaveTensor
    from .latents.noise import LatentNoise
    from .metrics.sliced_wasserstein import SlicedWasserstein
    from .models.gmm import ModelGMM
    from .samplers.euler import Euler
    from .samplers.heun import Heun
    from .samplers.sample import Sample
    from .schedules.karras import Karras

    return [ModelGMM, LatentNoise, Karras, Euler, Heun, Sample, SaveTensor, PlotSamples, SlicedWasserstein]
