"""Train the class-conditional EDM digits model shipped as nodes/models/weights/digits_edm.safetensors.

Data: scikit-learn's 8x8 digits (1797 images, `pip install scikit-learn`; load_digits ships in the
wheel), pixels 0..16 scaled to [-1, 1], shape (8, 8). Model: networks/mlp_denoiser.py under EDM
preconditioning (Karras et al. 2022, Table 1): x0 = c_skip x + c_out F(c_in x, ln(sigma)/4, class),
trained with the EDM loss (log-normal sigma, P_mean -1.2, P_std 1.2; weight (sigma^2+sd^2)/(sigma sd)^2,
i.e. plain MSE on F's target) and label dropout to the null class (Ho & Salimans 2022) for CFG.

Deterministic: fixed seeds, one CPU thread, float32. Run from the repository root:
    python training/train_digits.py [--steps N] [--out PATH]"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits

from samplegraph.nodes.models.networks.mlp_denoiser import MLPConfig, MLPDenoiser, save_mlp
from samplegraph.nodes.models.parametrisation import edm_scalings

OUT = Path(__file__).resolve().parents[1] / "nodes" / "models" / "weights" / "digits_edm.safetensors"
CONFIG = MLPConfig(shape=[8, 8], hidden=256, layers=3, classes=10, embedding=64, sigma_data=0.75)
P_MEAN, P_STD = -1.2, 1.2  # EDM's training noise distribution: ln sigma ~ N(P_MEAN, P_STD^2)
LABEL_DROPOUT = 0.1  # fraction of examples trained as the null class (Ho & Salimans 2022 use 0.1-0.2)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(1797, 8, 8) images in [-1, 1] and (1797,) labels."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 8.0 - 1.0  # (N, 8, 8)
    return x, torch.tensor(d.target, dtype=torch.int64)


def loss_fn(net: MLPDenoiser, x0: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """EDM loss: MSE between F and its target (x0 - c_skip x) / c_out, which is the weighted x0 loss."""
    b, sd = x0.shape[0], CONFIG.sigma_data
    sigma = (torch.randn(b, generator=gen) * P_STD + P_MEAN).exp()  # (B,)
    x = x0 + sigma[:, None, None] * torch.randn(x0.shape, generator=gen)  # (B, 8, 8)
    c_skip, c_out = (c[:, None, None] for c in edm_scalings(sigma, sd))  # (B, 1, 1)
    c_in = (sigma ** 2 + sd ** 2).rsqrt()[:, None, None]  # (B, 1, 1)
    drop = torch.rand(b, generator=gen) < LABEL_DROPOUT  # (B,)
    y = torch.where(drop, torch.full_like(y, CONFIG.classes), y)  # (B,)
    target = (x0 - c_skip * x) / c_out  # (B, 8, 8)
    return (net(c_in * x, sigma.log() / 4, y) - target).square().mean()


def train(steps: int, batch: int = 256, lr: float = 2e-3, seed: int = 0) -> tuple[MLPDenoiser, list[float]]:
    """Adam with a cosine learning-rate decay and an EMA of the weights (decay 0.999); returns the EMA net."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = digits()
    net = MLPDenoiser(CONFIG)
    ema = MLPDenoiser(CONFIG)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    losses = []
    for i in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)  # (B,)
        loss = loss_fn(net, x[idx], y[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - 0.999)
        losses.append(float(loss.detach()))
    return ema, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    net, losses = train(args.steps)
    seconds = time.perf_counter() - start
    chunk = max(1, len(losses) // 10)
    for i in range(0, len(losses), chunk):
        part = losses[i:i + chunk]
        print(f"steps {i:6d}-{i + len(part) - 1:6d}: mean loss {sum(part) / len(part):.4f}")
    final = sum(losses[-500:]) / len(losses[-500:])
    print(f"trained {args.steps} steps in {seconds:.0f} s; final loss (mean of last 500) {final:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # no wall time in the metadata: the same run writes the same bytes
    save_mlp(net, args.out, {"training": {"script": "training/train_digits.py", "steps": args.steps,
                                          "label_dropout": LABEL_DROPOUT, "final_loss": round(final, 4)}})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
