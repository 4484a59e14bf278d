"""The shipped class-conditional EDM digits model and the safetensors loader users share: exact
round-trips, clear errors for bad files, CFG identities on a real network, and a sample-quality
check by a classifier fit on the real digits (it cannot pass by accident: chance is 10%)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from samplegraph.graph.errors import NodeError
from samplegraph.nodes.guidance.cfg import CFG
from samplegraph.nodes.models.condition import ModelCondition
from samplegraph.nodes.models.digits import WEIGHTS, ModelDigits
from samplegraph.nodes.models.networks.mlp_denoiser import MLPConfig, MLPDenoiser, save_mlp
from samplegraph.nodes.models.safetensors_model import ModelSafetensors, mlp_model

from helpers_digits import sample

ROOT = Path(__file__).resolve().parents[1]
SMALL = MLPConfig(shape=[8, 8], hidden=32, layers=2, classes=10, embedding=16, sigma_data=0.75)


@pytest.fixture(scope="module")
def digits():
    return ModelDigits().run()


def probe(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    sigma = torch.exp(torch.empty(n).uniform_(-5.0, 4.0, generator=gen))  # (n,) 0.007..55
    return torch.randn(n, 8, 8, generator=gen) * sigma[:, None, None], sigma


def test_save_then_load_gives_identical_outputs_for_every_class(tmp_path):
    torch.manual_seed(0)
    net = MLPDenoiser(SMALL)
    path = save_mlp(net, tmp_path / "mine.safetensors")
    loaded = ModelSafetensors(path=str(path)).run()
    original = mlp_model(net.eval())
    x, sigma = probe()
    for label in (None, 0, 7):
        ours = loaded if label is None else ModelCondition(label=label).run(loaded)
        same = original if label is None else ModelCondition(label=label).run(original)
        assert torch.equal(ours(x, sigma), same(x, sigma))  # bit-identical after the round trip
        with torch.no_grad():
            ref = net(x * (sigma ** 2 + 0.75 ** 2).rsqrt()[:, None, None], sigma.log() / 4, label)  # (n, 8, 8)
        c_skip = 0.75 ** 2 / (sigma ** 2 + 0.75 ** 2)
        c_out = sigma * 0.75 / (sigma ** 2 + 0.75 ** 2).sqrt()
        expected = c_skip[:, None, None] * x + c_out[:, None, None] * ref  # EDM eq. 7, written out
        assert torch.allclose(ours(x, sigma), expected, atol=1e-5, rtol=1e-5)
    # the config may come separately (a user's plain state dict without metadata)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    plain = ModelSafetensors(path=str(tmp_path / "plain.safetensors"), config=SMALL.model_dump()).run()
    assert torch.equal(plain(x, sigma), loaded(x, sigma))


def test_bad_files_raise_node_errors_naming_the_file_and_the_mismatch(tmp_path):
    with pytest.raises(NodeError, match="nope.safetensors' does not exist"):
        ModelSafetensors(path=str(tmp_path / "nope.safetensors")).run()
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(NodeError, match="junk.safetensors' is not a readable safetensors file"):
        ModelSafetensors(path=str(tmp_path / "junk.safetensors")).run()
    net = MLPDenoiser(SMALL)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(NodeError, match="has no 'config' in its metadata"):
        ModelSafetensors(path=str(tmp_path / "plain.safetensors")).run()
    wider = {**SMALL.model_dump(), "hidden": 48}
    with pytest.raises(NodeError, match=r"wrong shapes \['inp.weight \(32, 64\) \(expected \(48, 64\)\)"):
        ModelSafetensors(path=str(tmp_path / "plain.safetensors"), config=wider).run()
    deeper = {**SMALL.model_dump(), "layers": 3}
    with pytest.raises(NodeError, match=r"missing keys \['blocks.2"):
        ModelSafetensors(path=str(tmp_path / "plain.safetensors"), config=deeper).run()
    with pytest.raises(NodeError, match="bad architecture config .*hidden"):
        ModelSafetensors(path=str(tmp_path / "plain.safetensors"), config={"hidden": "wide"}).run()
    model = ModelSafetensors(path=str(tmp_path / "plain.safetensors"), config=SMALL.model_dump()).run()
    with pytest.raises(NodeError, match=r"label 10 is out of range: this model has classes 0..9"):
        ModelCondition(label=10).run(model)
    with pytest.raises(NodeError, match="'weakness' applies to analytic mixtures only"):
        ModelCondition(label=1, weakness=2.0).run(model)


def test_cli_reports_a_missing_model_file_without_a_traceback(tmp_path):
    wf = {"version": 1, "seed": 0, "nodes": {
        "model": {"kind": "model.safetensors", "params": {"path": str(tmp_path / "missing.safetensors")}},
        "sigmas": {"kind": "schedule.karras", "params": {"steps": 2}},
        "noise": {"kind": "latent.noise", "params": {"batch": 2, "shape": [8, 8]}, "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": "sampler.euler"},
        "sample": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver",
                                                 "latent": "noise"}}},
        "outputs": ["sample"]}
    (tmp_path / "wf.json").write_text(json.dumps(wf))
    proc = subprocess.run([sys.executable, "-m", "samplegraph.runtime.cli", "run", str(tmp_path / "wf.json"),
                           "--out", str(tmp_path / "out"), "--no-cache", "--device", "cpu", "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    assert "missing.safetensors' does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_image_grid_tiles_images_row_major_with_grey_gaps(tmp_path):
    from PIL import Image

    from samplegraph.nodes.core.context import NodeContext
    from samplegraph.nodes.io.image_grid import ImageGrid
    images = torch.stack([torch.full((2, 3), v) for v in (-1.0, 1.0, 0.5)])  # (3, 2, 3)
    ctx = NodeContext.detached(out_dir=tmp_path)
    path = ImageGrid(path="g.png", columns=2, scale=1, pad=1).run(images, ctx)
    px = torch.from_numpy(np.asarray(Image.open(path)).astype(np.int64))  # (rows*(H+1)+1, cols*(W+1)+1)
    assert px.shape == (1 + 2 * 3, 1 + 2 * 4)
    assert px[1, 1] == 0 and px[1, 5] == 255 and px[4, 1] == 191 and px[0, 0] == 128 and px[4, 5] == 128
    with pytest.raises(NodeError, match=r"shape \(B, H, W\) or \(B, C, H, W\)"):
        ImageGrid(path="g.png").run(torch.zeros(2, 5, 4, 4), ctx)


def test_shipped_weights_are_small_self_describing_and_trained_on_the_train_split(digits):
    assert WEIGHTS.stat().st_size < 4e6
    assert sum(p.stat().st_size for p in WEIGHTS.parent.glob("*.safetensors")) < 1e7  # all shipped weights, MNIST and the DiT too
    for path in WEIGHTS.parent.glob("digits_*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            assert json.loads(f.metadata()["training"])["data"] == "digits train split", path.name
    assert digits.classes == 10 and digits.sampling.sigma_data == 0.75 and digits.label is None


def test_cfg_scale_one_equals_conditional_and_zero_the_null_class(digits):
    x, sigma = probe()
    cond, uncond = ModelCondition(label=3).run(digits), ModelCondition().run(digits)
    # u + 1 (c - u) is c up to float32 round-off (one ulp of |x0| <= ~2)
    assert torch.allclose(CFG(scale=1.0).run(cond, uncond)(x, sigma), cond(x, sigma), atol=1e-6, rtol=0)
    assert torch.equal(CFG(scale=0.0).run(cond, uncond)(x, sigma), uncond(x, sigma))
    assert not torch.allclose(cond(x, sigma), uncond(x, sigma), atol=1e-3)  # the label matters
    guided, plain = sample(CFG(scale=1.0).run(cond, uncond), n=8, steps=5), sample(cond, n=8, steps=5)
    assert torch.allclose(guided, plain, atol=1e-4, rtol=0)


def test_guided_samples_have_the_requested_class(digits):
    """Each class's CFG-2 samples, labelled by a logistic regression fit on the real digits."""
    datasets = pytest.importorskip("sklearn.datasets")
    linear = pytest.importorskip("sklearn.linear_model")
    real = datasets.load_digits()
    clf = linear.LogisticRegression(max_iter=3000).fit(real.images.reshape(-1, 64) / 8.0 - 1.0, real.target)
    uncond = ModelCondition().run(digits)
    hits, per_class = 0, 12
    for label in range(10):
        xs = sample(CFG(scale=2.0).run(ModelCondition(label=label).run(digits), uncond), n=per_class, seed=label)
        assert xs.shape == (per_class, 8, 8) and bool(torch.isfinite(xs).all())
        # the data range [-1, 1] plus CFG 2's overshoot (the train-split model reaches -1.65 in one pixel)
        assert float(xs.min()) > -1.7 and float(xs.max()) < 1.7
        hits += int((clf.predict(xs.reshape(per_class, 64).double().numpy()) == label).sum())
    print(f"class accuracy of CFG-2 samples: {hits}/{10 * per_class}")
    assert hits / (10 * per_class) >= 0.9
    # the null class is the unconditional model: its 64 samples spread over the digits
    free = clf.predict(sample(uncond, n=64, seed=99).reshape(64, 64).double().numpy())
    assert len(set(free.tolist())) >= 8 and max(free.tolist().count(c) for c in range(10)) <= 20


def test_rewriting_a_checkpoint_invalidates_the_disk_cache_of_everything_downstream(tmp_path):
    """The loader's key includes the file's size and mtime: a retrained file overwriting the old
    one must not return stale samples from the disk cache of an earlier process."""
    import os

    from samplegraph import Runtime

    path = tmp_path / "mine.safetensors"
    doc = {"nodes": {
        "model": {"kind": "model.safetensors", "params": {"path": str(path)}},
        "sigmas": {"kind": "schedule.karras", "params": {"steps": 4}},
        "noise": {"kind": "latent.noise", "params": {"batch": 4, "shape": [8, 8]}, "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": "sampler.euler"},
        "sample": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver",
                                                "latent": "noise"}}}, "outputs": ["sample"]}
    torch.manual_seed(1)
    save_mlp(MLPDenoiser(SMALL), path)
    first = Runtime(device="cpu", cache_dir=tmp_path / "cache").run(doc)
    again = Runtime(device="cpu", cache_dir=tmp_path / "cache").run(doc)
    assert again.report.node("sample").cache == "disk" and torch.equal(again["sample"], first["sample"])
    torch.manual_seed(2)
    save_mlp(MLPDenoiser(SMALL), path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a later write
    changed = Runtime(device="cpu", cache_dir=tmp_path / "cache").run(doc)
    assert changed.report.node("model").cache == "miss" and changed.report.node("sample").cache == "miss"
    assert changed.report.node("noise").cache == "disk"  # unrelated nodes still hit
    assert not torch.allclose(changed["sample"], first["sample"])
