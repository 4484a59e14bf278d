"""Train the digits classifiers shipped in nodes/models/weights/ (networks/classifier_net.py):

- clean (digits_classifier.safetensors, model.digits_classifier): log p(class | x0) and a 64-d
  penultimate feature embedding, the verifier, reward and feature extractor of the metrics;
  cross-entropy on the train split with light Gaussian-noise augmentation (std ~ U(0, 0.1)),
  so that the near-clean samples of a sampler are read like real images.
- noisy (digits_noisy_classifier.safetensors, model.digits_noisy_classifier): log p(class | x_sigma)
  for classifier guidance (Dhariwal & Nichol 2021), cross-entropy on x0 + sigma eps with
  ln sigma ~ U(ln 0.002, ln 80), the EDM sampling range, c_in = 1/sqrt(sigma^2 + 0.75^2).
- minority (digits_minority_classifier.safetensors, model.digits_minority_classifier): the noisy
  recipe on 5 minority levels instead of digits: the minority score (nodes/models/minority.py, Um et
  al. 2024) of each train image under the unconditional model.digits, cut at its quintiles (0 the
  most common, 4 the rarest; held-out images are cut at the train quintiles). Minority guidance is
  guidance.classifier towards level 4 on the unconditional model.

Data: the train split (1497 images) of nodes/data/digits.py; accuracy is reported on the 300
held-out images (noisy: at fixed sigmas, one fixed noise draw). AdamW with cosine decay.
Deterministic: fixed seeds, one CPU thread, float32. Run from the repository root:
    python training/train_digits_classifier.py --kind clean|noisy|minority [--steps N] [--out PATH]

Measured here (1 thread, on a 2-core CPU shared with other jobs, load ~4-7):
    clean: 3000 steps in 59 s, final loss 0.0000 (mean of the last 200 steps); held-out accuracy 0.993
    noisy: 6000 steps in 189 s, final loss 0.838; held-out accuracy at sigma 0 / 0.1 / 0.3 / 0.5 / 1 / 2 / 5:
           0.993 / 0.993 / 0.993 / 0.970 / 0.793 / 0.513 / 0.223 (chance 0.1)
    minority: 6000 steps in 44 s, final loss 0.737; held-out accuracy at sigma 0 / 1: 0.443 / 0.393 (chance 0.2),
              per level 0..4 at sigma 0: 0.767 / 0.314 / 0.310 / 0.508 / 0.419"""
from __future__ import annotations

import math

import torch

from run import arguments, timed  # training/run.py: the scripts run from this folder

from samplegraph.nodes.data.digits import digits_split
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.minority import LEVELS, level_edges, minority_levels, minority_score
from samplegraph.nodes.models.networks.classifier_net import ClassifierConfig, ClassifierNet, save_classifier

CLEAN = ClassifierConfig(shape=[8, 8], hidden=128, layers=2, features=64, classes=10)
KINDS: dict[str, tuple[ClassifierConfig, int, str]] = {  # config, default steps, file name
    "clean": (CLEAN, 3000, "digits_classifier.safetensors"),
    "noisy": (CLEAN.model_copy(update={"noisy": True, "sigma_data": 0.75}), 6000,
              "digits_noisy_classifier.safetensors"),
    "minority": (CLEAN.model_copy(update={"noisy": True, "sigma_data": 0.75, "classes": LEVELS}), 6000,
                 "digits_minority_classifier.safetensors"),
}
SIGMA_RANGE = (0.002, 80.0)  # noisy: ln sigma uniform over the EDM sampling range
AUGMENT_STD = 0.1  # clean: noise std drawn uniformly from [0, AUGMENT_STD]
EVAL_SIGMAS = (0.0, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0)


def noised(x0: torch.Tensor, noisy: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A training input (B, 8, 8) and its sigma (B,) (None for the clean classifier)."""
    b = x0.shape[0]
    if noisy:
        lo, hi = (math.log(s) for s in SIGMA_RANGE)
        sigma = torch.empty(b).uniform_(lo, hi, generator=gen).exp()  # (B,)
    else:
        sigma = torch.rand(b, generator=gen) * AUGMENT_STD  # (B,)
    x = x0 + sigma[:, None, None] * torch.randn(x0.shape, generator=gen)  # (B, 8, 8)
    return x, (sigma if noisy else None)


def labelled(split: str, minority: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 8, 8) and labels (N,) of a split: digits, or minority levels cut at the train quantiles."""
    x, y = digits_split(split)
    if not minority:
        return x, y
    model = ModelDigits().run()  # unbound: the unconditional model (null class)
    edges = level_edges(minority_score(model, digits_split("train")[0]))  # (LEVELS - 1,)
    return x, minority_levels(minority_score(model, x), edges)


def train(config: ClassifierConfig, steps: int, batch: int = 256, lr: float = 2e-3, seed: int = 0,
          data: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[ClassifierNet, list[float]]:
    """AdamW (weight decay 1e-4) with cosine learning-rate decay on `data` (images (N, ...), labels (N,);
    default the digits train split of the config's kind); returns the final net in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = labelled("train", config.classes != 10) if data is None else data
    net = ClassifierNet(config)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)  # (B,)
        xs, sigma = noised(x[idx], config.noisy, gen)
        loss = torch.nn.functional.cross_entropy(net(xs, sigma), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return net.eval().requires_grad_(False), losses


def heldout_accuracy(net: ClassifierNet, data: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> dict[float, float]:
    """Held-out accuracy on `data` (default the digits held-out split), per sigma of EVAL_SIGMAS for the
    noisy classifier (one fixed noise draw)."""
    x, y = labelled("heldout", net.config.classes != 10) if data is None else data
    if not net.config.noisy:
        return {0.0: float((net(x).argmax(1) == y).float().mean())}
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(123))  # (N, 8, 8)
    out = {}
    for s in EVAL_SIGMAS:
        sigma = torch.full((x.shape[0],), s)  # (N,)
        out[s] = float((net(x + s * eps, sigma).argmax(1) == y).float().mean())
    return out


def level_accuracy(net: ClassifierNet, sigma: float) -> list[float]:
    """Held-out accuracy (minority kind) per true level at one sigma (one fixed noise draw)."""
    x, y = labelled("heldout", True)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(123))  # (N, 8, 8)
    hit = net(x + sigma * eps, torch.full((x.shape[0],), sigma)).argmax(1) == y  # (N,)
    return [float(hit[y == k].float().mean()) for k in range(net.config.classes)]


def main() -> None:
    kind, config, steps, out = arguments(__doc__, "kind", KINDS, "clean")
    net, losses, seconds = timed(train, config, steps)
    final = sum(losses[-200:]) / len(losses[-200:])
    acc = heldout_accuracy(net)
    print(f"trained {steps} steps in {seconds:.0f} s; final loss (mean of last 200) {final:.4f}")
    print("held-out accuracy: " + ", ".join(f"sigma {s:g}: {a:.3f}" for s, a in acc.items()))
    if kind == "minority":
        for s in (0.0, 1.0):
            print(f"held-out accuracy per level at sigma {s:g}: " + " / ".join(f"{a:.3f}" for a in level_accuracy(net, s)))
    save_classifier(net, out, {"training": {"script": "training/train_digits_classifier.py", "kind": kind,
                                            "steps": steps, "data": "digits train split",
                                            "final_loss": round(final, 4),
                                            "heldout_accuracy": {str(s): round(a, 4) for s, a in acc.items()}}})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")

if __name__ == "__main__":
    main()
