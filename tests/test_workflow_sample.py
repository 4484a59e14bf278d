"""End to end: model.gmm + schedule.karras + latent.noise + a sampler + sample, run by the Runtime."""
import pytest
import torch

from samplegraph import NodeRunError, Registry, Runtime
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.latents.noise import LatentNoise
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.heun import Heun
from samplegraph.nodes.samplers.sample import Sample
from samplegraph.nodes.schedules.karras import Karras

NODES = [ModelGMM, Karras, LatentNoise, Euler, Heun, Sample]


def workflow(solver: str = "sampler.heun", batch: int = 512, shape: list[int] | None = None,
             seed: int = 0) -> dict:
    return {"version": 1, "seed": seed, "nodes": {
        "model": {"kind": "model.gmm", "params": {"preset": "ring", "modes": 8, "std": 0.3}},
        "sigmas": {"kind": "schedule.karras", "params": {"steps": 20}},
        "noise": {"kind": "latent.noise", "params": {"batch": batch, "shape": shape or [2]},
                  "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": solver},
        "sample": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver",
                                                "latent": "noise"}},
    }, "outputs": ["sample", "model"]}


def test_heun_workflow_samples_every_mode_and_reports_nfe():
    result = Runtime(registry=Registry(NODES), device="cpu").run(workflow())
    x, model = result["sample"], result["model"]
    assert x.shape == (512, 2) and x.dtype == torch.float32
    assert (model.mode_weights_of(x.double()) - 1 / 8).abs().max() < 0.05
    exact = model.sample(512, torch.Generator().manual_seed(0))  # (512, 2)
    assert model.log_prob(x.double()).mean() > model.log_prob(exact).mean() - 0.5
    nfe = {n.node: n.nfe for n in result.report.nodes}
    assert nfe["sample"] == 2 * 20 - 1  # the last Heun step, to sigma 0, is an Euler step


def test_seed_and_cache_behaviour(tmp_path):
    runtime = Runtime(registry=Registry(NODES), device="cpu", cache_dir=tmp_path)
    first = runtime.run(workflow("sampler.euler", batch=8))["sample"]
    fresh = Runtime(registry=Registry(NODES), device="cpu", cache_dir=tmp_path)  # a new process's view
    again = fresh.run(workflow("sampler.euler", batch=8))
    assert torch.equal(again["sample"], first)
    assert {n.node: n.cache for n in again.report.nodes} == {
        "model": "disk", "sigmas": "disk", "noise": "disk", "solver": "miss", "sample": "disk"}
    other = runtime.run(workflow("sampler.euler", batch=8, seed=1))["sample"]
    assert not torch.equal(other, first)


def test_wrong_latent_shape_is_a_located_run_error():
    with pytest.raises(NodeRunError, match=r"node 'sample' \(sample\): .*latent shape \[2\]"):
        Runtime(registry=Registry(NODES), device="cpu").run(workflow(batch=2, shape=[3]))


@pytest.mark.parametrize("latent, message", [(torch.zeros(3), "batch dimension"),
                                             (torch.zeros(3, 2, dtype=torch.int64), "floating-point")])
def test_sample_rejects_bad_latents(latent, message):
    sigmas = Karras(steps=2).run()
    with pytest.raises(NodeError, match=message):
        Sample().run(ModelGMM().run(), sigmas, Euler(), latent, NodeContext.detached())
