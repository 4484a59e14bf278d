"""The shipped digits classifiers (networks/classifier_net.py): loader round trips and errors, the
clean classifier's held-out accuracy (the metrics' verifier), the noisy classifier's accuracy
falling with sigma yet far above chance (10%) at moderate noise, and classifier guidance with it
raising the clean classifier's class accuracy of the unconditional digits model."""
import pytest
import torch
from safetensors.torch import save_file

from samplegraph import Runtime
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.data.digits import digits_split
from samplegraph.nodes.guidance.classifier import ClassifierGuidance
from samplegraph.nodes.models.classifier import Classifier, NoisyClassifier
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.digits_classifier import ModelDigitsClassifier
from samplegraph.nodes.models.digits_noisy_classifier import ModelDigitsNoisyClassifier
from samplegraph.nodes.models.networks.classifier_net import (ClassifierConfig, ClassifierNet, CleanClassifier,
                                                             NoisyNetClassifier, load_classifier, save_classifier)

from helpers_digits import sample

pytest.importorskip("sklearn.datasets")
SMALL = ClassifierConfig(shape=[8, 8], hidden=16, layers=1, features=8, classes=10, embedding=8)


@pytest.fixture(scope="module")
def clean() -> Classifier:
    return ModelDigitsClassifier().run()


@pytest.fixture(scope="module")
def noisy() -> NoisyClassifier:
    return ModelDigitsNoisyClassifier().run()


@pytest.fixture(scope="module")
def heldout() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_split("heldout")


def test_save_then_load_is_bit_identical_for_clean_and_noisy_nets(tmp_path):
    torch.manual_seed(0)
    x, sigma = torch.randn(6, 8, 8), torch.tensor([0.0, 0.01, 0.3, 1.0, 5.0, 80.0])
    for noisy_net in (False, True):
        net = ClassifierNet(SMALL.model_copy(update={"noisy": noisy_net})).eval()
        loaded = load_classifier(save_classifier(net, tmp_path / f"c{noisy_net}.safetensors"))
        assert loaded.config == net.config and not loaded.training
        s = sigma if noisy_net else None
        assert torch.equal(loaded(x, s), net(x, s))
        assert torch.equal(loaded.features(x, s), net.features(x, s)) and loaded.features(x, s).shape == (6, 8)


def test_loader_errors_name_the_file_and_the_mismatch(tmp_path):
    with pytest.raises(NodeError, match="gone.safetensors' does not exist"):
        load_classifier(tmp_path / "gone.safetensors")
    net = ClassifierNet(SMALL)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(NodeError, match=r"has no 'config' in its metadata; .*\"noisy\": false"):
        load_classifier(tmp_path / "plain.safetensors")
    assert torch.equal(load_classifier(tmp_path / "plain.safetensors", SMALL.model_dump()).head.weight,
                       net.head.weight)
    noisy_cfg = {**SMALL.model_dump(), "noisy": True}  # a clean file read as a noisy net lacks the sigma MLP
    with pytest.raises(NodeError, match=r"missing keys \['time.0.bias'"):
        load_classifier(tmp_path / "plain.safetensors", noisy_cfg)
    with pytest.raises(NodeError, match=r"wrong shapes \['inp.weight \(16, 64\) \(expected \(32, 64\)\)"):
        load_classifier(tmp_path / "plain.safetensors", {**SMALL.model_dump(), "hidden": 32})
    with pytest.raises(NodeError, match="bad architecture config .*features"):
        load_classifier(tmp_path / "plain.safetensors", {**SMALL.model_dump(), "features": 1})


def test_clean_classifier_is_accurate_on_held_out_digits(clean, heldout):
    x, y = heldout
    logp = clean(x)  # (300, 10)
    acc = float((logp.argmax(1) == y).float().mean())
    print(f"clean classifier held-out accuracy: {acc:.3f}")
    assert acc > 0.95
    assert torch.allclose(logp.exp().sum(1), torch.ones(300), atol=1e-5)
    assert clean.features(x).shape == (300, 64) and clean.classes == 10
    x64 = x[:4].double().requires_grad_(True)
    out = clean(x64)  # float64 in, float64 out, differentiable in x0
    assert out.dtype == torch.float64 and out.shape == (4, 10)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x64)
    assert grad.shape == (4, 8, 8) and float(grad.abs().sum()) > 0


def test_noisy_classifier_accuracy_falls_with_sigma_yet_beats_chance(noisy, heldout):
    x, y = heldout
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))  # (300, 8, 8)
    sigmas = [0.0, 0.5, 1.0, 2.0, 5.0, 20.0]
    acc = [float((noisy(x + s * eps, torch.full((300,), s)).argmax(1) == y).float().mean()) for s in sigmas]
    print("noisy classifier held-out accuracy: " + ", ".join(f"sigma {s:g}: {a:.3f}" for s, a in zip(sigmas, acc)))
    assert acc[0] > 0.93 and acc[2] > 0.6  # chance is 0.1
    assert all(a_next <= a + 0.02 for a, a_next in zip(acc, acc[1:]))  # non-increasing up to noise
    assert acc[0] - acc[-1] > 0.5 and acc[-1] < 0.35  # at sigma 20 the image is nearly gone


def test_classifier_guidance_raises_class_accuracy_of_the_unconditional_model(clean, noisy):
    uncond = ModelCondition().run(ModelDigits().run())
    labels, n = (0, 3, 5, 8), 16
    plain_hits = guided_hits = 0
    for label in labels:
        guided = ClassifierGuidance(label=label, scale=4.0).run(uncond, noisy)
        plain_hits += int((clean(sample(uncond, n=n, seed=label)).argmax(1) == label).sum())
        guided_hits += int((clean(sample(guided, n=n, seed=label)).argmax(1) == label).sum())
    total = n * len(labels)
    print(f"class accuracy unguided {plain_hits}/{total}, classifier guidance 4: {guided_hits}/{total}")
    assert plain_hits / total < 0.3 and guided_hits / total > 0.8


def test_nodes_run_in_a_workflow_and_agree_with_the_direct_accuracy(clean, heldout):
    doc = {"nodes": {
        "real": {"kind": "data.digits", "params": {"split": "heldout"}},
        "verifier": {"kind": "model.digits_classifier"},
        "acc": {"kind": "metrics.classifier_accuracy", "inputs": {"samples": "real.images",
                                                                  "classifier": "verifier",
                                                                  "labels": "real.labels"}},
        "noisy": {"kind": "model.digits_noisy_classifier"}},
        "outputs": ["acc.accuracy", "noisy"]}
    result = Runtime(device="cpu").run(doc)
    x, y = heldout
    assert result["acc.accuracy"] == pytest.approx(float((clean(x).argmax(1) == y).double().mean()))
    assert isinstance(result["noisy"], NoisyNetClassifier) and isinstance(clean, CleanClassifier)
