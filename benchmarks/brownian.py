"""Brownian-tree noise: samplegraph's counter-based tree against k-diffusion's BrownianTreeNoiseSampler
(torchsde's BrownianTree under it) on the same shapes, in one run.

    python benchmarks/brownian.py [--particles 2048] [--steps 25] [--repeat 3]

Rows: the whole dpmpp_2m_sde solve on a 3-D Gaussian mixture (exact denoiser: the cost is the
noise), each library's own loop, and the noise increments alone (one call per step). Medians of
`repeat` runs, torch threads 1. torchsde's tree is one path for the whole batch (not batch-split
invariant) and caches; ours is a pure function per particle (batch split and order invariant)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.dpmpp_2m_sde import Dpmpp2MSde
from samplegraph.nodes.schedules.karras import Karras

from common import median_of, table

ROOT = Path(__file__).resolve().parents[1]


def k_diffusion():  # noqa: ANN201 - the module, via the tests' loader (no package __init__)
    sys.path.insert(0, str(ROOT / "tests"))
    from peers import kdiffusion_sampling

    return kdiffusion_sampling()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    k = k_diffusion()
    model = ModelGMM(preset="random", modes=8, dim=3).run()
    sigmas = Karras(steps=args.steps).run().values.to(torch.float32)  # (S+1,)
    x = sigmas[0] * torch.randn(args.particles, 3, generator=torch.Generator().manual_seed(0))  # (B, 3)
    sampler, noise = Dpmpp2MSde(), NoiseSource(0)
    ours_solve = median_of(lambda: run_steps(sampler, model, sampler.init(x, Karras(steps=args.steps).run()),
                                             noise), args.repeat)

    def kd_solve() -> None:
        tree = k.BrownianTreeNoiseSampler(x, float(sigmas[-2]), float(sigmas[0]), seed=0)
        k.sample_dpmpp_2m_sde(lambda z, s: model(z, s), x, sigmas, disable=True, noise_sampler=tree)

    kd_solve_s = median_of(kd_solve, args.repeat)
    particle = torch.arange(args.particles)
    pairs = list(zip(sigmas[:-2].tolist(), sigmas[1:-1].tolist()))  # the noisy steps (the last goes to 0)

    def ours_noise() -> None:
        for s, t in pairs:
            noise.brownian(particle, torch.tensor(s), torch.tensor(t), (3,))

    def kd_noise() -> None:
        tree = k.BrownianTreeNoiseSampler(x, float(sigmas[-2]), float(sigmas[0]), seed=0)
        for s, t in pairs:
            tree(torch.tensor(s), torch.tensor(t))

    ours_noise_s, kd_noise_s = median_of(ours_noise, args.repeat), median_of(kd_noise, args.repeat)
    print(f"\n{args.particles} particles x 3-D, {args.steps} Karras steps, dpmpp_2m_sde, torch threads 1, "
          f"median of {args.repeat}\n")
    print(table(["what", "samplegraph s", "k-diffusion (torchsde) s", "samplegraph / k-diffusion"],
                [["whole solve", ours_solve, kd_solve_s, ours_solve / kd_solve_s],
                 [f"noise increments only ({len(pairs)} calls)", ours_noise_s, kd_noise_s,
                  ours_noise_s / kd_noise_s]]))


if __name__ == "__main__":
    main()
