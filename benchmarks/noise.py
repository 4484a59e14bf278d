"""Counter-based noise (nodes/core/noise.py) against torch's generators, in the same run.

    python benchmarks/noise.py [--threads 1] [--repeat 15]

Rows: NoiseSource.normal (float32 and float64 outputs), NoiseSource.uniform (float64, one hash
per element) and torch.randn, on the default generator and on a seeded torch.Generator (mt19937
on CPU, Philox on CUDA), for the shapes of issue 9: many small particles (65,536 x 4) and a few
large ones (16 x 16,384); on CUDA also the torch-ops path that the fused Triton kernel
(nodes/core/noise_kernel.py) replaces. Times are the best and the median of `repeat` calls (CUDA:
synchronised); "x randn" is the ratio of best times to torch.randn float32 on the same device.
Without CUDA the CUDA rows print "no CUDA"."""
from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from samplegraph.nodes.core import noise
from samplegraph.nodes.core.noise import NoiseSource

from common import table, timings

SHAPES = [(65_536, 4), (16, 16_384)]
HEADERS = ["device", "shape (B x E)", "method", "best ms", "median ms", "x randn"]


def timed(fn: Callable[[], torch.Tensor], device: torch.device, repeat: int) -> tuple[float, float]:
    """Best and median wall time (ms) of `repeat` calls, synchronising CUDA so that kernels are counted."""
    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    call()  # warm-up: allocator, kernels, lazy init
    times = timings(call, repeat)
    return 1e3 * min(times), 1e3 * statistics.median(times)


def torch_ops(src: NoiseSource, particle: torch.Tensor, e: int) -> torch.Tensor:
    """src.normal(particle, 3, (e,)) through hash_blocks' torch ops, bypassing the fused kernel."""
    out = torch.empty(particle.shape[0], (e + 1) // 2, 2, device=particle.device)  # (B, P, 2)
    noise.torch_streams(src.row_keys(particle, 3, 0), out, uniform=False)
    return out


def rows_for(device: torch.device, repeat: int) -> list[list[object]]:
    """Rows (device, shape, method, best ms, median ms, best / torch.randn float32's) on one device."""
    gen = torch.Generator(device=device).manual_seed(0)
    src = NoiseSource(0)
    rows = []
    for b, e in SHAPES:
        particle = torch.arange(b, device=device)  # (B,)
        methods = {
            "torch.randn float32": lambda: torch.randn(b, e, device=device),
            "torch.randn float32, seeded Generator": lambda: torch.randn(b, e, device=device, generator=gen),
            "NoiseSource.normal float32": lambda: src.normal(particle, 3, (e,), dtype=torch.float32),
            "NoiseSource.normal float64": lambda: src.normal(particle, 3, (e,), dtype=torch.float64),
            "NoiseSource.uniform float64": lambda: src.uniform(particle, 3, (e,)),
        }
        if device.type == "cuda":  # what the fused kernel replaces: the same draw in torch's elementwise ops
            methods["NoiseSource.normal float32, torch ops (no fused kernel)"] = lambda: torch_ops(src, particle, e)
        times = {name: timed(fn, device, repeat) for name, fn in methods.items()}
        ref = times["torch.randn float32"][0]
        rows += [[device.type, f"{b} x {e}", name, best, med, best / ref] for name, (best, med) in times.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the issue's figures: 1)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = rows_for(torch.device("cpu"), args.repeat)
    print(f"CPU, {args.threads} thread(s); targets: within 3x of torch.randn on CPU, 2x on CUDA\n")
    print(table(HEADERS, rows))
    if torch.cuda.is_available():
        print()
        print(table(HEADERS, rows_for(torch.device("cuda"), args.repeat)))
    else:
        print("\nCUDA rows: no CUDA")


if __name__ == "__main__":
    main()
