"""Shared by the digits tests: seeded sampling of an 8x8 digits Denoiser."""
import torch

from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.schedules.karras import Karras


def sample(denoise, n: int = 64, steps: int = 20, seed: int = 0, sigma_max: float = 80.0) -> torch.Tensor:
    """n samples (n, 8, 8) by Heun on a Karras schedule from sigma_max to 0.002."""
    sigmas = Karras(steps=steps, sigma_min=0.002, sigma_max=sigma_max).run()
    x = torch.randn(n, 8, 8, generator=torch.Generator().manual_seed(seed)) * sigma_max  # (n, 8, 8)
    return run_steps(Heun(), denoise, Heun().init(x, sigmas), NoiseSource(seed)).x
