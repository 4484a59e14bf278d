"""latent.preview: the per-family latent -> RGB projection equals the matrix product rgb = z^T F + b shown as
(rgb + 1) / 2; `sample` streams it as StepPreview events of the current x0 estimate every N steps (and after the
last); the server stores it as a PNG data URL of the same pixels."""
import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samplegraph import Runtime
from samplegraph.graph.errors import NodeError, NodeRunError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import FunctionDenoiser
from samplegraph.nodes.core.noise import NoiseSource
from samplegraph.nodes.core.state import bcast
from samplegraph.nodes.latents.preview import FACTORS, LatentPreview
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.sample import Sample
from samplegraph.nodes.schedules.karras import Karras
from samplegraph.runtime.events import StepPreview

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("family, channels", [("sd", 4), ("sdxl", 4), ("sd3", 16), ("flux", 16)])
def test_projection_is_the_matrix_product(family, channels):
    preview = LatentPreview(family=family).run()
    factors, bias = (torch.tensor(v, dtype=torch.float64) for v in FACTORS[family])
    assert factors.shape == (channels, 3) and preview.label == family
    z = 2 * torch.randn(2, channels, 5, 7, generator=torch.Generator().manual_seed(0))  # (2, C, 5, 7)
    rgb = z[0].double().permute(1, 2, 0).reshape(-1, channels) @ factors + bias  # (35, 3)
    expect = ((rgb.reshape(5, 7, 3).permute(2, 0, 1) + 1) / 2).clamp(0, 1)  # (3, 5, 7)
    got = preview.image(z)
    assert got.shape == (3, 5, 7) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expect, rtol=0, atol=1e-6)
    assert 0 < float((got > 0).float().mean()) and float((got < 1).float().mean()) > 0.5  # not all clamped


def test_factors_are_comfyui_published_numbers():
    """Spot checks against comfy/latent_formats.py (SD15 row 1, SDXL bias, SD3 last row, Flux bias)."""
    assert FACTORS["sd"][0][0] == [0.3512, 0.2297, 0.3227] and FACTORS["sd"][1] == [0.0, 0.0, 0.0]
    assert FACTORS["sdxl"][1] == [0.1084, -0.0175, -0.0011]
    assert FACTORS["sd3"][0][-1] == [-0.1448, -0.1463, -0.1189] and FACTORS["sd3"][1] == [0.2394, 0.2135, 0.1925]
    assert FACTORS["flux"][1] == [-0.0329, -0.0718, -0.0851]


def gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * (0.25 / (0.25 + bcast(sigma, x) ** 2))


@pytest.mark.parametrize("every, steps", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (9, [5])])
def test_sample_streams_the_current_x0_estimate_every_n_steps(every, steps):
    sigmas = Karras(steps=5, sigma_min=0.02, sigma_max=10.0).run()
    x = sigmas.sigma_max * NoiseSource(0).normal(torch.arange(2), -1, (4, 3, 3))  # (2, 4, 3, 3)
    seen = []
    ctx = NodeContext.detached()
    ctx.on_preview = lambda step, total, image: seen.append((step, total, image))
    preview = LatentPreview(family="sd", every=every).run()
    out = Sample().run(FunctionDenoiser(gaussian), sigmas, Euler(), x, ctx, preview=preview)
    expected, state = [], Euler().init(x, sigmas)  # the x0 estimate after each step, stepped by hand
    for i in range(5):
        state = Euler().step(FunctionDenoiser(gaussian), state, NoiseSource(0))
        expected.append(preview.image(state.denoised))
    assert [s for s, _, _ in seen] == steps and all(t == 5 for _, t, _ in seen)
    for step, _, image in seen:
        assert torch.equal(image, expected[step - 1])
    assert torch.equal(out, Sample().run(FunctionDenoiser(gaussian), sigmas, Euler(), x, NodeContext.detached()))


def test_preview_errors_are_located():
    with pytest.raises(NodeError, match="'family' is 'auto' but input 'model' is not connected"):
        LatentPreview().run()
    with pytest.raises(NodeError, match=r"takes \(B, 16, h, w\) latents"):
        LatentPreview(family="flux").run().image(torch.zeros(1, 4, 2, 2))


@pytest.mark.parametrize("listening", [True, False])
def test_a_preview_of_the_wrong_channels_is_refused_before_any_step(listening):
    """A flux preview on 4-channel latents fails before the first denoiser call, whether or not anyone listens
    for previews (checked only when the first preview was due, it cost `every` steps, or nothing was checked)."""
    calls = []

    def counted(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return gaussian(x, sigma)

    sigmas = Karras(steps=5, sigma_min=0.02, sigma_max=10.0).run()
    ctx = NodeContext.detached()
    if listening:
        ctx.on_preview = lambda step, total, image: None
    preview = LatentPreview(family="flux", every=3).run()
    with pytest.raises(NodeError, match=r"input 'preview': its flux projection takes \(B, 16, h, w\)"):
        Sample().run(FunctionDenoiser(counted), sigmas, Euler(), torch.zeros(1, 4, 2, 2), ctx, preview=preview)
    assert calls == []


def test_server_stores_the_preview_as_a_png_of_the_same_pixels():
    from samplegraph.runtime.serve.jobs import preview_json
    image = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(1))
    data = preview_json(StepPreview("sample", 2, 5, image))
    assert {k: data[k] for k in ("node", "step", "total")} == {"node": "sample", "step": 2, "total": 5}
    json.dumps(data)  # storable
    png = base64.b64decode(data["png"].removeprefix("data:image/png;base64,"))
    with Image.open(io.BytesIO(png)) as picture:
        pixels = np.asarray(picture.convert("RGB"))  # (4, 6, 3)
    assert np.array_equal(pixels, (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())


def test_inpaint_workflow_streams_previews_of_the_sd_family(tmp_path):
    """workflows/inpaint.json's latent.preview (family auto from pipe.model) on the tiny pipeline: previews every
    4 steps and after the last; the last one is the picture of the final latent (Euler's last x0 = its output)."""
    from peers import diffusers
    from helpers_pipeline import build_sd_pipeline
    diffusers()
    sd = build_sd_pipeline(tmp_path / "sd")
    Image.fromarray(np.full((64, 64, 3), 100, dtype=np.uint8)).save(tmp_path / "in.png")
    Image.fromarray(np.tile(np.where(np.arange(64) < 32, 255, 0).astype(np.uint8), (64, 1))).save(tmp_path / "m.png")
    wf = json.loads((ROOT / "workflows" / "inpaint.json").read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"], n["full"]["params"]["steps"], n["sigmas"]["params"]["strength"] = str(sd), 6, 1.0
    n["image"]["params"]["path"], n["mask_image"]["params"]["path"] = str(tmp_path / "in.png"), str(tmp_path / "m.png")
    events = []
    result = Runtime(device="cpu").run(wf, outputs=["sample", "preview"], on_event=events.append)
    previews = [e for e in events if isinstance(e, StepPreview)]
    assert [(e.node, e.step, e.total) for e in previews] == [("sample", 4, 6), ("sample", 6, 6)]
    assert result["preview"].label == "sd"
    torch.testing.assert_close(previews[-1].image, result["preview"].image(result["sample"]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_auto_family_previews_on_every_pipeline_family(family, tmp_path):
    """latent.preview with family auto picks each pipeline's factors from pipe.model; SDXL (4 channels) and SD3 (16)
    stream their pictures; the tiny Flux VAE has 4 latent channels where real Flux has 16, so its projection is
    refused with the shapes named, at the sample node."""
    from helpers_pipeline import family_folder, family_txt2img
    wf = family_txt2img(family, family_folder(family, tmp_path / family))
    wf["nodes"]["preview"] = {"kind": "latent.preview", "inputs": {"model": "pipe.model"}, "params": {"every": 1}}
    wf["nodes"]["sample"]["inputs"]["preview"] = "preview"
    events = []
    if family == "flux":
        with pytest.raises(NodeRunError, match=r"node 'sample'.*flux projection takes \(B, 16, h, w\) latents"):
            Runtime(device="cpu", cache=False).run(wf, outputs=["sample"], on_event=events.append)
        return
    result = Runtime(device="cpu", cache=False).run(wf, outputs=["sample", "preview"], on_event=events.append)
    previews = [e for e in events if isinstance(e, StepPreview)]
    assert result["preview"].label == family and [(e.step, e.total) for e in previews] == [(1, 2), (2, 2)]
    torch.testing.assert_close(previews[-1].image, result["preview"].image(result["sample"]), rtol=0, atol=1e-5)
