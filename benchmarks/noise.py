"""Counter-based noise (nodes/core/noise.py) against torch's generators, in the same run.

    python benchmarks/noise.py [--threads 1] [--repeat 15]

Rows: NoiseSource.normal (float32 and float64 outputs) and torch.randn, on the default generator
and on a seeded torch.Generator (mt19937 on CPU, Philox on CUDA), for the shapes of issue 9: many
small particles (65,536 x 4) and a few large ones (16 x 16,384). Times are the best of `repeat`
calls (CUDA: synchronised); "x randn" is the ratio to torch.randn float32 on the same device.
Without CUDA the CUDA rows print "no CUDA"."""
from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from samplegraph.nodes.core.noise import NoiseSource

from common import best_of, table

SHAPES = [(65_536, 4), (16, 16_384)]


def timed(fn: Callable[[], torch.Tensor], device: torch.device, repeat: int) -> float:
    """Best wall time (ms) of `repeat` calls, synchronising CUDA so that kernels are counted."""
    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    call()  # warm-up: allocator, kernels, lazy init
    return 1e3 * best_of(call, repeat)


def rows_for(device: torch.device, repeat: int) -> list[list[object]]:
    """Rows (device, shape, method, ms, ratio to torch.randn float32) on one device."""
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
        }
        times = {name: timed(fn, device, repeat) for name, fn in methods.items()}
        ref = times["torch.randn float32"]
        rows += [[device.type, f"{b} x {e}", name, ms, ms / ref] for name, ms in times.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the issue's figures: 1)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = rows_for(torch.device("cpu"), args.repeat)
    print(f"CPU, {args.threads} thread(s); targets: within 3x of torch.randn on CPU, 2x on CUDA\n")
    print(table(["device", "shape (B x E)", "method", "ms", "x randn"], rows))
    if torch.cuda.is_available():
        print()
        print(table(["device", "shape (B x E)", "method", "ms", "x randn"], rows_for(torch.device("cuda"), args.repeat)))
    else:
        print("\nCUDA rows: no CUDA")


if __name__ == "__main__":
    main()
