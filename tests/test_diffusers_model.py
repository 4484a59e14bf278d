"""model.diffusers on tiny randomly initialised diffusers networks saved to a temporary folder: our
Denoiser equals x0 computed by hand from the raw network output (eps, v, flow; continuous and
rounded timesteps; class labels and the null class), Euler sampling through a workflow matches
diffusers' EulerDiscreteScheduler on the same network, and bad folders are NodeErrors that name
the file (a pickle checkpoint is refused without being opened)."""
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from peers import diffusers
from samplegraph import Runtime
from samplegraph.graph.errors import NodeError, NodeRunError
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.diffusers_model import ModelDiffusers
from samplegraph.nodes.samplers.euler import Euler

UNET = dict(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4, attention_head_dim=4)
DIT = dict(num_attention_heads=2, attention_head_dim=8, in_channels=2, out_channels=4, num_layers=1, sample_size=8,
           patch_size=2, num_embeds_ada_norm=10, norm_num_groups=2)  # learned variance: 2 x in_channels out


def save_pipeline(root: Path, seed: int = 0, scheduler: str = "DDPMScheduler", net: str = "UNet2DModel",
                  **kw) -> torch.nn.Module:
    """A tiny random network in root/unet (or root/transformer) and its scheduler in root/scheduler."""
    d = diffusers()
    torch.manual_seed(seed)
    model = getattr(d, net)(**(UNET if net == "UNet2DModel" else DIT), **kw).eval()
    model.save_pretrained(root / ("unet" if net == "UNet2DModel" else "transformer"), safe_serialization=True)
    sched = d.FlowMatchEulerDiscreteScheduler(shift=3.0) if scheduler == "flow" else \
        d.DDPMScheduler(beta_schedule="linear", prediction_type=scheduler)
    sched.save_pretrained(root / "scheduler")
    return model


def load(path: Path, **params):
    """The model node run through the Runtime (as a workflow would)."""
    doc = {"nodes": {"model": {"kind": "model.diffusers", "params": {"path": str(path), **params}}},
           "outputs": ["model"]}
    return Runtime(device="cpu", cache=False).run(doc)["model"]


def ddpm_alpha_bar() -> np.ndarray:
    """DDPM's linear betas 1e-4..0.02 over 1000 steps, cumulated in float64 (Ho et al. 2020)."""
    return np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))


def raw(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, label: int | None = None) -> torch.Tensor:
    labels = None if label is None else torch.full((x.shape[0],), label)
    with torch.no_grad():
        return net(x, t.float(), class_labels=labels).sample[:, : x.shape[1]]  # (B, C, H, W): mean half


def by_hand(net, x, t, sigma, prediction: str, label: int | None = None) -> torch.Tensor:
    """x0 from the network at VP input sqrt(alpha_bar) x and timestep t (eps: x - sigma eps; v: a x_vp - s v)."""
    a = (1 / (1 + sigma.double() ** 2)).sqrt()[:, None, None, None]  # (B, 1, 1, 1) sqrt(alpha_bar)
    s = (1 - a ** 2).sqrt()
    x_vp = a * x.double()  # (B, C, H, W)
    out = raw(net, x_vp.float(), t, label).double()
    x0 = x.double() - sigma.double()[:, None, None, None] * out if prediction == "eps" else a * x_vp - s * out
    return x0.float()


def probe(sigma: torch.Tensor, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(sigma.numel(), 2, 8, 8, generator=gen) * (1 + sigma[:, None, None, None])  # (B, 2, 8, 8)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_denoiser_is_x0_by_hand_at_integer_and_fractional_timesteps(tmp_path, prediction):
    net = save_pipeline(tmp_path, scheduler=prediction)
    ours = "eps" if prediction == "epsilon" else "v"
    ab = ddpm_alpha_bar()
    table = torch.from_numpy(np.sqrt((1 - ab) / ab))  # (1000,) float64 ascending
    # integer timesteps: continuous and rounded modes both feed exactly k
    k = torch.tensor([0, 17, 500, 999])
    sigma = table[k].float()  # (4,)
    x = probe(sigma)
    expected = by_hand(net, x, k.double(), sigma, ours)
    scale = float(expected.abs().max())
    for mode in ("continuous", "rounded"):
        got = load(tmp_path, timestep=mode)(x, sigma)
        assert (got - expected).abs().max() / scale < 2e-6, mode
    # between table entries: rounded = nearest entry in log sigma; continuous = log-linear index (k-diffusion)
    sigma = torch.tensor([0.05, 0.7, 3.3, 42.0])
    x = probe(sigma, seed=2)
    log_table, log_sigma = table.log(), sigma.double().log()
    nearest = (log_table[None, :] - log_sigma[:, None]).abs().argmin(dim=1)  # (4,)
    low = torch.searchsorted(log_table, log_sigma) - 1
    frac = (log_sigma - log_table[low]) / (log_table[low + 1] - log_table[low])
    for mode, t in (("rounded", nearest.double()), ("continuous", low.double() + frac)):
        expected = by_hand(net, x, t, sigma, ours)
        got = load(tmp_path, timestep=mode)(x, sigma)
        assert (got - expected).abs().max() / expected.abs().max() < 2e-6, mode


def test_class_conditional_unet_binds_labels_and_its_null_class(tmp_path):
    net = save_pipeline(tmp_path, scheduler="epsilon", num_class_embeds=11)
    model = load(tmp_path, null_class=10)
    sigma = torch.tensor([0.3, 2.0, 9.0])
    x = probe(sigma)
    t = load(tmp_path, null_class=10).sampling.timestep(sigma)  # continuous time, checked above
    for label, bound in ((3, ModelCondition(label=3).run(model)), (10, ModelCondition().run(model)), (10, model)):
        expected = by_hand(net, x, t, sigma, "eps", label)
        assert torch.allclose(bound(x, sigma), expected, rtol=1e-5, atol=1e-5), label
    assert not torch.allclose(ModelCondition(label=3).run(model)(x, sigma), model(x, sigma), atol=1e-3)
    with pytest.raises(NodeError, match="label 11 is out of range: this model has classes 0..10"):
        ModelCondition(label=11).run(model)
    without_null = load(tmp_path)
    ModelCondition(label=2).run(without_null)(x, sigma)  # a class still works
    with pytest.raises(NodeError, match="has no null class, so it has no unconditional denoiser"):
        without_null(x, sigma)
    with pytest.raises(NodeRunError, match="'null_class' is 11, but the model has labels 0..10"):
        load(tmp_path, null_class=11)


def test_class_conditional_unet_composes_with_cfg_in_a_workflow(tmp_path):
    net = save_pipeline(tmp_path, scheduler="epsilon", num_class_embeds=11)
    doc = {"nodes": {
        "model": {"kind": "model.diffusers", "params": {"path": str(tmp_path), "null_class": 10}},
        "cond": {"kind": "model.condition", "params": {"label": 3}, "inputs": {"model": "model"}},
        "cfg": {"kind": "guidance.cfg", "params": {"scale": 2.5}, "inputs": {"cond": "cond", "uncond": "model"}},
        "sigmas": {"kind": "schedule.uniform_timesteps", "params": {"steps": 3}, "inputs": {"model": "model"}},
        "noise": {"kind": "latent.noise", "params": {"batch": 2, "shape": [2, 8, 8]}, "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": "sampler.euler"},
        "sample": {"kind": "sample", "inputs": {"denoise": "cfg", "sigmas": "sigmas", "sampler": "solver",
                                                "latent": "noise"}}},
        "outputs": ["cfg", "model", "sample"]}
    out = Runtime(device="cpu", cache=False).run(doc)
    sigma = torch.tensor([0.5, 5.0])
    x = probe(sigma)
    t = out["model"].sampling.timestep(sigma)
    cond, uncond = by_hand(net, x, t, sigma, "eps", 3), by_hand(net, x, t, sigma, "eps", 10)
    assert torch.allclose(out["cfg"](x, sigma), uncond + 2.5 * (cond - uncond), rtol=1e-5, atol=1e-4)
    assert out.report.node("sample").nfe == 2 * 3  # both models at each of three steps
    assert torch.isfinite(out["sample"]).all()


def test_dit_uses_its_extra_label_as_null_and_drops_the_learned_variance(tmp_path):
    net = save_pipeline(tmp_path, scheduler="epsilon", net="DiTTransformer2DModel")
    model = load(tmp_path)
    sigma = torch.tensor([0.3, 2.0, 9.0])
    x = probe(sigma)
    t = model.sampling.timestep(sigma)
    assert torch.allclose(model(x, sigma), by_hand(net, x, t, sigma, "eps", 10), rtol=1e-5, atol=1e-5)
    cond = ModelCondition(label=4).run(model)
    assert torch.allclose(cond(x, sigma), by_hand(net, x, t, sigma, "eps", 4), rtol=1e-5, atol=1e-5)
    half = load(tmp_path, dtype="bfloat16")  # weights in bfloat16, inputs and outputs in the sampler's float32
    assert next(half.net.parameters()).dtype == torch.bfloat16
    got = half(x, sigma)
    assert got.dtype == torch.float32 and (got - model(x, sigma)).abs().max() / model(x, sigma).abs().max() < 0.05
    with pytest.raises(NodeRunError, match="'null_class' is for UNet2DModel"):
        load(tmp_path, null_class=0)


def test_flow_matching_scheduler_gives_rectified_flow_with_its_shift(tmp_path):
    net = save_pipeline(tmp_path, scheduler="flow")
    model = load(tmp_path)
    assert model.sampling.shift == 3.0 and model.sampling.multiplier == 1000
    sigma = torch.tensor([0.1, 1.0, 20.0])
    x = probe(sigma)
    t = sigma.double() / (1 + sigma.double())  # (B,) flow time: x_t = (1 - t) x0 + t eps = x / (1 + sigma)
    x_t = x.double() / (1 + sigma.double())[:, None, None, None]
    v = raw(net, x_t.float(), t * 1000).double()  # velocity eps - x0 at diffusers' timestep 1000 t
    expected = (x_t - t[:, None, None, None] * v).float()
    assert torch.allclose(model(x, sigma), expected, rtol=1e-5, atol=1e-5)


def euler_workflow(path: Path, steps: int) -> dict:
    return {"seed": 3, "nodes": {
        "model": {"kind": "model.diffusers", "params": {"path": str(path)}},
        "sigmas": {"kind": "schedule.uniform_timesteps", "params": {"steps": steps}, "inputs": {"model": "model"}},
        "noise": {"kind": "latent.noise", "params": {"batch": 4, "shape": [2, 8, 8]}, "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": "sampler.euler"},
        "sample": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver",
                                                "latent": "noise"}}},
        "outputs": ["model", "sigmas", "noise", "sample"]}


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_euler_workflow_matches_diffusers_euler_discrete_scheduler(tmp_path, prediction):
    net = save_pipeline(tmp_path, scheduler=prediction)
    out = Runtime(device="cpu", cache=False).run(euler_workflow(tmp_path, 10)).outputs
    sched = diffusers().EulerDiscreteScheduler.from_pretrained(tmp_path / "scheduler", timestep_spacing="linspace")
    sched.set_timesteps(10)
    # diffusers keeps alphas_cumprod in float32: 1 - a_t loses digits near t = 0 (sigma 0.01: 8e-5 relative)
    assert torch.allclose(out["sigmas"].values, sched.sigmas.double(), rtol=1e-4)
    x = out["noise"] * sched.init_noise_sigma / out["sigmas"].values[0].float()  # the same starting noise
    first = None
    for t in sched.timesteps:
        with torch.no_grad():
            x = sched.step(net(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
        first = x if first is None else first
    ours_first = Euler().step(out["model"], Euler().init(out["noise"], out["sigmas"]), NoiseSource(3)).x
    for got, ref in ((ours_first, first), (out["sample"], x)):
        err = float((got - ref).abs().max() / ref.abs().max())
        assert err < 1e-5, err  # measured 2e-7 .. 8e-7


def test_bad_folders_raise_node_errors_naming_the_file(tmp_path, monkeypatch):
    with pytest.raises(NodeError, match="'.*nowhere' is not a directory"):
        ModelDiffusers(path=str(tmp_path / "nowhere")).run()
    (tmp_path / "empty").mkdir()
    with pytest.raises(NodeError, match=r"is not a diffusers model folder: no '.*empty/config.json' or "
                                        r"'.*empty/unet/config.json'"):
        ModelDiffusers(path=str(tmp_path / "empty")).run()
    save_pipeline(tmp_path / "p", scheduler="epsilon")
    unet = tmp_path / "p" / "unet"
    weights = unet / "diffusion_pytorch_model.safetensors"
    good = weights.read_bytes()
    bare = tmp_path / "bare"  # a model folder with no scheduler config anywhere near it
    shutil.copytree(unet, bare)
    with pytest.raises(NodeError, match="'.*bare' has no scheduler/scheduler_config.json, .* pass param 'scheduler'"):
        ModelDiffusers(path=str(bare)).run()
    ModelDiffusers(path=str(bare), scheduler={"beta_schedule": "linear"}).run()
    with pytest.raises(NodeError, match="beta_schedule 'sigmoid' is not supported"):
        ModelDiffusers(path=str(bare), scheduler={"beta_schedule": "sigmoid"}).run()
    # a corrupted weights file and a config that does not match the weights
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(NodeError, match="cannot load the UNet2DModel in '.*unet'"):
        ModelDiffusers(path=str(tmp_path / "p")).run()
    weights.write_bytes(good)
    config = json.loads((unet / "config.json").read_text())
    (unet / "config.json").write_text(json.dumps({**config, "block_out_channels": [8, 24]}))
    with pytest.raises(NodeError, match="cannot load the UNet2DModel .*size mismatch"):
        ModelDiffusers(path=str(tmp_path / "p")).run()
    # diffusers itself would only warn and leave a randomly initialised class embedding
    (unet / "config.json").write_text(json.dumps({**config, "num_class_embeds": 5}))
    with pytest.raises(NodeError, match=r"safetensors' does not match '.*config.json': missing keys "
                                        r"\['class_embedding.weight'\]"):
        ModelDiffusers(path=str(tmp_path / "p")).run()
    (unet / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(NodeError, match="needs text-encoder conditioning"):
        ModelDiffusers(path=str(tmp_path / "p")).run()
    (unet / "config.json").write_text(json.dumps(config))
    monkeypatch.setitem(__import__("sys").modules, "diffusers", None)
    with pytest.raises(NodeError, match=r"pip install samplegraph\[diffusers\]"):
        ModelDiffusers(path=str(tmp_path / "p")).run()


class Tripwire:
    """Unpickling this creates a file: the proof that a loader opened a pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_only_checkpoint_is_refused_without_being_opened(tmp_path):
    save_pipeline(tmp_path, scheduler="epsilon")
    unet = tmp_path / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (unet / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Tripwire(marker)))
    with pytest.raises(NodeError, match=r"'.*diffusion_pytorch_model.bin' is a pickle checkpoint, and samplegraph "
                                        r"never unpickles"):
        ModelDiffusers(path=str(tmp_path)).run()
    assert not marker.exists()
    (unet / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(NodeError, match="has no 'diffusion_pytorch_model.safetensors'"):
        ModelDiffusers(path=str(tmp_path)).run()


def test_rewriting_the_weights_invalidates_the_disk_cache_downstream(tmp_path):
    save_pipeline(tmp_path / "p", seed=1, scheduler="epsilon")
    doc = {**euler_workflow(tmp_path / "p", 3), "outputs": ["sample"]}
    first = Runtime(device="cpu", cache_dir=tmp_path / "cache").run(doc)
    again = Runtime(device="cpu", cache_dir=tmp_path / "cache").run(doc)
    assert again.report.node("sample").cache == "disk" and torch.equal(again["sample"], first["sample"])
    save_pipeline(tmp_path / "p", seed=2, scheduler="epsilon")
    weights = tmp_path / "p" / "unet" / "diffusion_pytorch_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # a later write
    changed = Runtime(device="cpu", cache_dir=tmp_path / "cache").run(doc)
    assert changed.report.node("model").cache == "miss" and changed.report.node("sample").cache == "miss"
    assert not torch.allclose(changed["sample"], first["sample"])
