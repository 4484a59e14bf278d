"""The digits model's variants and skip-layer copies: the weak model (autoguidance's guide) is
measurably worse than the main one on held-out images, the rectified-flow variant's class-
conditional samples are recognised by the clean classifier (also through sampler.flow_sde), and
model.skip_blocks skips exactly the named residual blocks (none skipped = identical)."""
import json
from pathlib import Path

import pytest
import torch

from samplegraph import Runtime
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.sampler import run_steps
from samplegraph.nodes.data.digits import digits_split
from samplegraph.nodes.guidance.cfg import CFG
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import ModelDigits
from samplegraph.nodes.models.digits_classifier import ModelDigitsClassifier
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.models.skip_blocks import ModelSkipBlocks
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.flow_sde import FlowSde
from samplegraph.nodes.schedules.normal import Normal

from helpers_digits import sample

pytest.importorskip("sklearn.datasets")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    return {v: ModelDigits(variant=v).run() for v in ("main", "weak")}


@pytest.fixture(scope="module")
def flow():
    return ModelDigits(variant="flow").run()


@pytest.fixture(scope="module")
def clean():
    return ModelDigitsClassifier().run()


def class_accuracy(clean, draw, labels=range(10), n: int = 8) -> float:
    """Fraction of draw(label, seed) samples (n, 8, 8) that the clean classifier reads as `label`."""
    hits = sum(int((clean(draw(label, label)).argmax(1) == label).sum()) for label in labels)
    return hits / (n * len(labels))


def heldout_denoising_error(model, sigma: float) -> float:
    """Mean squared x0 error of the unconditional model on the held-out images noised to sigma."""
    x0, _ = digits_split("heldout")
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))  # (300, 8, 8)
    return float((model(x0 + sigma * eps, torch.full((300,), sigma)) - x0).square().mean())


def test_weak_model_is_worse_than_main_on_held_out_data(models, clean):
    errors = {v: [heldout_denoising_error(models[v], s) for s in (0.2, 0.5, 1.0, 2.0)] for v in ("main", "weak")}
    print("held-out x0 MSE at sigma 0.2, 0.5, 1, 2:", {v: [round(e, 4) for e in es] for v, es in errors.items()})
    assert all(w > m * 1.05 for m, w in zip(errors["main"], errors["weak"]))
    acc = {v: class_accuracy(clean, lambda label, seed, m=models[v]: sample(
        ModelCondition(label=label).run(m), n=8, seed=seed)) for v in ("main", "weak")}
    print(f"class accuracy at CFG 1 (conditional model): {acc}")
    assert acc["main"] >= 0.9 and acc["main"] > acc["weak"] + 0.05


def flow_sample(model, label: int, seed: int, sampler=None, n: int = 8, steps: int = 20) -> torch.Tensor:
    """n flow samples of class `label` by CFG 2, uniform in flow time (schedule.normal), Euler by default."""
    sampler = sampler or Euler()
    guided = CFG(scale=2.0).run(ModelCondition(label=label).run(model), ModelCondition().run(model))
    sigmas = Normal(steps=steps).run(model)
    x = torch.randn(n, 8, 8, generator=torch.Generator().manual_seed(seed)) * float(sigmas.values[0])  # (n, 8, 8)
    return run_steps(sampler, guided, sampler.init(x, sigmas), NoiseSource(seed)).x


def test_flow_variant_samples_are_recognised_by_the_clean_classifier(flow, clean):
    assert flow.inner.prediction == "flow" and type(flow.sampling).__name__ == "RectifiedFlowSampling"
    euler = class_accuracy(clean, lambda label, seed: flow_sample(flow, label, seed))
    sde = class_accuracy(clean, lambda label, seed: flow_sample(flow, label, seed, FlowSde()))
    print(f"flow variant, CFG 2, 20 steps: class accuracy Euler {euler:.3f}, flow_sde {sde:.3f}")
    assert euler >= 0.9 and sde >= 0.85
    xs = flow_sample(flow, 4, 0)
    assert bool(torch.isfinite(xs).all()) and float(xs.abs().max()) < 1.6


def probe(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    sigma = torch.exp(torch.empty(n).uniform_(-4.0, 3.0, generator=gen))  # (n,) 0.02..20
    return torch.randn(n, 8, 8, generator=gen) * sigma[:, None, None], sigma


def test_skipping_no_block_is_identical_and_each_block_matters(models):
    main = ModelCondition(label=3).run(models["main"])
    x, sigma = probe()
    assert main.skippable_blocks == 3 and models["weak"].skippable_blocks == 1
    assert torch.equal(main.skipping([])(x, sigma), main(x, sigma))
    for b in range(3):
        skipped = ModelSkipBlocks(blocks=[b]).run(main)
        assert not torch.allclose(skipped(x, sigma), main(x, sigma), atol=1e-3)
        # binding a class commutes with skipping (the skipped copy keeps the label)
        other = ModelCondition(label=3).run(ModelSkipBlocks(blocks=[b]).run(models["main"]))
        assert torch.equal(other(x, sigma), skipped(x, sigma))
    # skipping every block leaves the input and output layers: EDM's x0 = c_skip x + c_out out(inp(c_in x))
    net, sd = main.net, 0.75
    c_in, c_skip = (sigma ** 2 + sd ** 2).rsqrt(), sd ** 2 / (sigma ** 2 + sd ** 2)
    c_out = sigma * sd * (sigma ** 2 + sd ** 2).rsqrt()
    with torch.no_grad():
        f = net.out(net.inp((c_in[:, None, None] * x).reshape(16, 64))).reshape(16, 8, 8)  # (16, 8, 8)
    expected = c_skip[:, None, None] * x + c_out[:, None, None] * f
    assert torch.allclose(ModelSkipBlocks(blocks=[0, 1, 2]).run(main)(x, sigma), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(main.skipping([0]).skipping([2])(x, sigma), main.skipping([2, 0])(x, sigma))


def test_skip_blocks_node_in_a_workflow_matches_the_direct_call():
    doc = {"nodes": {"model": {"kind": "model.digits"},
                     "skipped": {"kind": "model.skip_blocks", "params": {"blocks": [0, 2]},
                                 "inputs": {"model": "model"}},
                     "cond": {"kind": "model.condition", "params": {"label": 4}, "inputs": {"model": "skipped"}}},
           "outputs": ["cond"]}
    x, sigma = probe()
    got = Runtime(device="cpu").run(doc)["cond"]
    assert torch.equal(got(x, sigma), ModelCondition(label=4).run(ModelDigits().run()).skipping([0, 2])(x, sigma))


def test_skip_blocks_errors_name_the_problem():
    with pytest.raises(NodeError, match=r"block indices \[3, 7\] are out of range: this network has blocks 0..2"):
        ModelSkipBlocks(blocks=[1, 3, 7]).run(ModelDigits().run())
    with pytest.raises(NodeError, match="GaussianMixture has no residual blocks to skip"):
        ModelSkipBlocks(blocks=[0]).run(ModelGMM(classes=[0] * 8).run())
    with pytest.raises(ValueError, match="blocks"):
        ModelSkipBlocks(blocks=[])


@pytest.mark.parametrize("name", ["digits_autoguidance.json", "digits_flow.json",
                                  "digits_classifier_guidance.json"])
def test_workflows_run_and_samples_are_finite(name, tmp_path):
    doc = json.loads((ROOT / "workflows" / name).read_text())
    runtime = Runtime(device="cpu")  # the second run reads the first's memory cache
    assert runtime.run(doc, out_dir=tmp_path).report.status == "ok"
    samples = [node_id for node_id, decl in doc["nodes"].items() if decl["kind"] == "sample"]
    result = runtime.run(doc, outputs=samples)
    assert samples and all(bool(torch.isfinite(result[s]).all()) for s in samples)
