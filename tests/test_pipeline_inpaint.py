"""Latent inpainting with an ordinary 4-channel UNet (sampler.inpaint, latent.mask, io.load_mask) on the tiny SD
pipeline: equals diffusers' StableDiffusionInpaintPipeline (num_channels_unet == 4 branch) with Euler, for strength
< 1 (start: latent.add_noise) and strength 1 (start: latent.empty, diffusers' pure noise); the known region equals the
encoded image's latents exactly at the end; every registered sampler runs inside the wrapper (analytic denoiser:
shapes, determinism, batch-split invariance, known region exact); the mask preparation equals diffusers'."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_pipeline import build_sd_pipeline, run_through_cli
from helpers_workflows import folder_workflows
from peers import diffusers
from samplegraph import Runtime
from samplegraph.graph.errors import NodeError
from samplegraph.nodes import builtin_nodes
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import FunctionDenoiser
from samplegraph.nodes.core.noise import INITIAL_STEP, NoiseSource
from samplegraph.nodes.core.sampler import Sampler, run_steps
from samplegraph.nodes.core.state import bcast
from samplegraph.nodes.io.load_mask import LoadMask
from samplegraph.nodes.latents.mask import LatentMask
from samplegraph.nodes.pipelines.pipeline import ModelPipeline
from samplegraph.nodes.samplers.euler import Euler
from samplegraph.nodes.samplers.inpaint import Inpaint, KnownDenoiser
from samplegraph.nodes.schedules.karras import Karras

ROOT = Path(__file__).resolve().parents[1]
SIZE, STEPS, SCALE = 64, 4, 3.0
PROMPT, NEGATIVE = "a red cat on a mat", "blurry"


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    diffusers()
    return build_sd_pipeline(tmp_path_factory.mktemp("tiny_sd_inpaint"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """A random RGB image and a mask whose repainted region (white) is a rectangle plus scattered pixels."""
    root = tmp_path_factory.mktemp("inpaint_files")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / "input.png")
    mask = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8) // 2  # mostly kept (< 128)
    mask[8:40, 16:56] = 255
    Image.fromarray(mask, mode="L").save(root / "mask.png")
    return root / "input.png", root / "mask.png"


def inpaint_workflow(sd: Path, files: tuple[Path, Path], strength: float, start: str = "add_noise") -> dict:
    wf = json.loads((ROOT / "workflows" / "inpaint.json").read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"], n["image"]["params"]["path"], n["mask_image"]["params"]["path"] = map(str, (sd, *files))
    n["prompt"]["params"]["prompt"], n["negative"]["params"]["prompt"] = PROMPT, NEGATIVE
    n["guided"]["params"]["scale"], n["full"]["params"]["steps"] = SCALE, STEPS
    n["sigmas"]["params"]["strength"] = strength
    if start == "empty":  # diffusers' start at strength 1: pure noise sigma_max * eps
        n["noised"] = {"kind": "latent.empty", "inputs": {"vae": "pipe.vae", "sigmas": "sigmas"},
                       "params": {"width": SIZE, "height": SIZE}}
    return wf


def diffusers_inpaint(sd: Path, files: tuple[Path, Path], encoded: torch.Tensor, strength: float,
                      monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    """StableDiffusionInpaintPipeline (4-channel UNet) on our encoded latents, our mask file and our initial noise."""
    d = diffusers()
    eps = NoiseSource(0).normal(torch.arange(1), INITIAL_STEP, tuple(encoded.shape[1:]))  # (1, 4, 8, 8) as we drew
    module = sys.modules[d.StableDiffusionInpaintPipeline.__module__]
    monkeypatch.setattr(module, "randn_tensor", lambda shape, **kw: eps.clone())
    base = d.StableDiffusionPipeline.from_pretrained(sd, local_files_only=True, use_safetensors=True,
                                                     safety_checker=None, requires_safety_checker=False)
    pipe = d.StableDiffusionInpaintPipeline(**base.components)
    pipe.scheduler = d.EulerDiscreteScheduler.from_config(base.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    with Image.open(files[1]) as mask:
        call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, image=encoded.clone(), mask_image=mask.copy(),
                    masked_image_latents=encoded.clone(), height=SIZE, width=SIZE, strength=strength,
                    num_inference_steps=STEPS, guidance_scale=SCALE)
    return pipe(output_type="latent", **call).images, pipe(output_type="pt", **call).images


def run(wf: dict, *outputs: str) -> list:
    result = Runtime(device="cpu").run(wf, outputs=list(outputs))
    return [result[o] for o in outputs]


def quantiles(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    err = (a.double() - b.double()).abs().flatten() / b.double().square().mean().sqrt()
    return float(err.median()), float(err.quantile(0.999))


@pytest.mark.parametrize("strength, start", [(0.5, "add_noise"), (1.0, "empty")])
def test_inpaint_equals_diffusers_inpaint_pipeline(sd, files, strength, start, monkeypatch):
    wf = inpaint_workflow(sd, files, strength, start)
    encoded, mask, final, images = run(wf, "encode", "mask", "sample", "decode")
    keep = mask.expand_as(final) == 0  # (1, 4, 8, 8)
    assert 0 < int(keep.sum()) < keep.numel()
    assert torch.equal(final[keep], encoded[keep])  # the known region is the image's latents, exactly
    ref_latent, ref_images = diffusers_inpaint(sd, files, encoded, strength, monkeypatch)
    assert torch.equal(ref_latent[keep], encoded[keep])  # diffusers' last blend is exact too
    for what, ours, ref in (("latents", final, ref_latent), ("images", images, ref_images)):
        med, p999 = quantiles(ours, ref)
        print(f"inpaint strength {strength} ({start}) {what}: median {med:.2e}, 99.9% {p999:.2e}")
        assert med < 1e-6 and p999 < 1e-5, (med, p999)
    assert not torch.allclose(final[~keep], encoded[~keep], atol=1e-2)  # the masked region was resampled


def test_strength_one_from_the_image_is_comfyui_start_not_diffusers(sd, files, monkeypatch):
    """At strength 1 latent.add_noise starts at x0 + sigma_max eps (ComfyUI's KSampler), diffusers at sigma_max eps
    (is_strength_max): the runs differ in the repainted region, by the image's share of the first network input."""
    encoded, mask, final = run(inpaint_workflow(sd, files, 1.0), "encode", "mask", "sample")
    ref_latent, _ = diffusers_inpaint(sd, files, encoded, 1.0, monkeypatch)
    repaint = mask.expand_as(final) == 1
    med, _ = quantiles(final[repaint], ref_latent[repaint])
    print(f"strength 1 from latent.add_noise vs diffusers: median relative difference {med:.2e}")
    assert med > 1e-4


def test_latent_mask_equals_diffusers_mask_preparation(sd, files):
    d = diffusers()
    vae = ModelPipeline(path=str(sd)).run(NodeContext.detached()).vae
    pixels = LoadMask(path=str(files[1])).run()  # (1, 1, 64, 64)
    ours = LatentMask().run(vae, pixels)  # (1, 1, 8, 8)
    processor = d.image_processor.VaeImageProcessor(vae_scale_factor=8, do_normalize=False, do_binarize=True,
                                                    do_convert_grayscale=True)
    with Image.open(files[1]) as mask:
        ref = torch.nn.functional.interpolate(processor.preprocess(mask, height=SIZE, width=SIZE), size=(8, 8))
    assert ours.shape == (1, 1, 8, 8) and torch.equal(ours, ref)
    assert set(ours.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(NodeError, match="factor 8 does not divide"):
        LatentMask().run(vae, pixels[..., :60])
    with pytest.raises(NodeError, match="grayscale mask"):
        LatentMask().run(vae, pixels.expand(1, 3, SIZE, SIZE))


def test_load_mask_luminance_alpha_and_invert(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white
    rgba[:, :3, 3] = 0  # transparent left half
    rgba[:, 3:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "m.png")
    path = str(tmp_path / "m.png")
    alpha = LoadMask(path=path, channel="alpha").run()
    assert alpha.shape == (1, 1, 4, 6) and alpha.dtype == torch.float32
    assert torch.equal(alpha[0, 0, :, :3], torch.ones(4, 3)) and torch.equal(alpha[0, 0, :, 3:], torch.zeros(4, 3))
    assert torch.equal(LoadMask(path=path, channel="alpha", invert=True).run(), 1 - alpha)
    with Image.open(path) as im:
        expect = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)
    assert torch.equal(LoadMask(path=path).run()[0, 0], expect)


# ---- every sampler inside the wrapper, on an analytic denoiser (image-shaped latents) ----

SIGMAS = Karras(steps=5, sigma_min=0.02, sigma_max=10.0).run()
SHAPE = (3, 4, 4)
KNOWN = torch.linspace(-1, 1, 48, dtype=torch.float64).reshape(1, *SHAPE)  # (1, 3, 4, 4)
MASK = (torch.arange(16).reshape(1, 1, 4, 4) % 3 == 0).to(torch.float64)  # (1, 1, 4, 4): 6 of 16 repainted


def gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of N(0, 0.7^2 I) data."""
    return x * (0.49 / (0.49 + bcast(sigma, x) ** 2))


def sampler_classes() -> list[type[Sampler]]:
    return [c for c in builtin_nodes() if isinstance(c, type) and issubclass(c, Sampler)]


def solve(sampler: Sampler, x: torch.Tensor, particle: torch.Tensor | None = None, seed: int = 3) -> torch.Tensor:
    wrapped = Inpaint().run(sampler, KNOWN, MASK)
    return run_steps(wrapped, FunctionDenoiser(gaussian), wrapped.init(x, SIGMAS, particle), NoiseSource(seed)).x


@pytest.mark.parametrize("cls", sampler_classes(), ids=lambda c: c.__node_kind__)
def test_every_sampler_runs_inside_inpaint_and_keeps_the_known_region(cls):
    sampler = cls()
    particle = torch.arange(4)
    x = SIGMAS.sigma_max * NoiseSource(3).normal(particle, INITIAL_STEP, SHAPE, dtype=torch.float64)  # (4, 3, 4, 4)
    out = solve(sampler, x)
    keep = (MASK == 0).expand_as(out)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out[keep], KNOWN.expand_as(out)[keep])
    assert torch.equal(out, solve(sampler, x))  # deterministic
    singles = torch.cat([solve(sampler, x[i:i + 1], particle[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(singles, out, rtol=1e-12, atol=1e-12)  # each particle keeps its own eps


def test_euler_inside_inpaint_is_the_blend_after_each_plain_euler_step():
    """The wrapper = a plain Euler step, then the known region set to x0_known + sigma_next eps (diffusers' loop)."""
    eps = NoiseSource(3).normal(torch.arange(2), INITIAL_STEP, SHAPE, dtype=torch.float64)  # (2, 3, 4, 4)
    x = SIGMAS.sigma_max * eps
    ours = solve(Euler(), x)
    s = SIGMAS.values
    for i in range(SIGMAS.steps):
        x = x + (x - gaussian(x, s[i:i + 1].expand(2))) / s[i] * (s[i + 1] - s[i])
        x = MASK * x + (1 - MASK) * (KNOWN + s[i + 1] * eps)
    torch.testing.assert_close(ours, x, rtol=1e-12, atol=1e-12)


def test_rows_and_shapes_are_checked():
    with pytest.raises(NodeError, match="'mask' .* does not fit"):
        Inpaint().run(Euler(), KNOWN, torch.ones(1, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(NodeError, match=r"\[0, 1\]"):
        Inpaint().run(Euler(), KNOWN, MASK * 2)
    wrapped = Inpaint().run(Euler(), KNOWN, MASK)
    with pytest.raises(NodeError, match="same \\(C, h, w\\)"):
        wrapped.init(torch.zeros(1, 3, 5, 5, dtype=torch.float64), SIGMAS)
    two = Inpaint().run(Euler(), torch.cat([KNOWN, -KNOWN]), MASK)
    x = SIGMAS.sigma_max * torch.ones(3, *SHAPE, dtype=torch.float64)
    with pytest.raises(NodeError, match="2 rows .* but particle 2 is stepped"):
        run_steps(two, FunctionDenoiser(gaussian), two.init(x, SIGMAS), NoiseSource(0))
    inside = KnownDenoiser(FunctionDenoiser(gaussian), torch.cat([KNOWN, -KNOWN]), MASK)  # what a step sees
    with pytest.raises(NodeError, match="evaluated 1 of the batch's rows"):  # dpm_adaptive's call on a row subset
        inside(x[:1], SIGMAS.values[:1])


def test_per_particle_known_latents_follow_the_particle_ids():
    """Two images: row p for particle p, whether the batch is stepped whole or one particle at a time."""
    known = torch.cat([KNOWN, -KNOWN])  # (2, 3, 4, 4)
    wrapped = Inpaint().run(Euler(), known, MASK)
    x = SIGMAS.sigma_max * NoiseSource(3).normal(torch.arange(2), INITIAL_STEP, SHAPE, dtype=torch.float64)

    def go(xs, particle):
        return run_steps(wrapped, FunctionDenoiser(gaussian), wrapped.init(xs, SIGMAS, particle), NoiseSource(3)).x

    whole = go(x, torch.arange(2))
    assert torch.equal(whole[1:], go(x[1:], torch.tensor([1])))
    keep = (MASK == 0).expand_as(whole)
    assert torch.equal(whole[keep], known[keep])


SMOKE = ["sampler.euler_ancestral", "sampler.heun", "sampler.dpmpp_2m", "sampler.ddim"]


@pytest.mark.parametrize("kind", SMOKE)
def test_inpaint_workflow_runs_with_other_samplers_on_the_tiny_pipeline(sd, files, kind):
    wf = inpaint_workflow(sd, files, 0.75)
    wf["nodes"]["solver"] = {"kind": kind}
    encoded, mask, final = run(wf, "encode", "mask", "sample")
    keep = mask.expand_as(final) == 0
    assert torch.isfinite(final).all() and torch.equal(final[keep], encoded[keep])


# ---- the 9-channel inpainting UNet (model.inpaint_condition) ----

@pytest.fixture(scope="module")
def sd9(tmp_path_factory) -> Path:
    diffusers()
    from helpers_pipeline_inpaint import build_sd_inpaint_pipeline
    return build_sd_inpaint_pipeline(tmp_path_factory.mktemp("tiny_sd_inpaint9"))


def unet_workflow(sd9: Path, files: tuple[Path, Path]) -> dict:
    wf = json.loads((ROOT / "workflows" / "inpaint_unet.json").read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"], n["image"]["params"]["path"], n["mask_image"]["params"]["path"] = map(str, (sd9, *files))
    n["prompt"]["params"]["prompt"], n["negative"]["params"]["prompt"] = PROMPT, NEGATIVE
    n["guided"]["params"]["scale"], n["sigmas"]["params"]["steps"] = SCALE, STEPS
    n["latent"]["params"].update(width=SIZE, height=SIZE)
    return wf


def test_inpainting_unet_equals_diffusers_inpaint_pipeline(sd9, files, monkeypatch):
    """cat[x_in, mask, masked-image latents] into the 9-channel UNet, as StableDiffusionInpaintPipeline with
    num_channels_unet == 9 (strength 1, no blend); diffusers gets our masked-image latents (it would sample the
    posterior) and our noise; the masked latents themselves equal diffusers' preprocessing encoded by the mean."""
    from samplegraph.nodes.pipelines.inpaint_condition import inpaint_image
    d = diffusers()
    latent0, final, images = run(unet_workflow(sd9, files), "latent", "sample", "decode")
    pipeline = ModelPipeline(path=str(sd9)).run(NodeContext.detached())
    with Image.open(files[0]) as rgb:
        pixels = torch.from_numpy(np.asarray(rgb.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    ours = inpaint_image(pipeline.vae, pixels, LoadMask(path=str(files[1])).run(), 0.5)  # (1, 5, 8, 8)
    pipe = d.StableDiffusionInpaintPipeline.from_pretrained(sd9, local_files_only=True, use_safetensors=True,
                                                            safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    with Image.open(files[0]) as rgb, Image.open(files[1]) as mask:
        rgb, mask = rgb.convert("RGB"), mask.copy()
    init = pipe.image_processor.preprocess(rgb, height=SIZE, width=SIZE)  # (1, 3, 64, 64) in [-1, 1]
    condition = pipe.mask_processor.preprocess(mask, height=SIZE, width=SIZE)  # (1, 1, 64, 64) binary
    with torch.no_grad():
        expect = pipe.vae.encode(init * (condition < 0.5)).latent_dist.mode() * pipe.vae.config.scaling_factor
    torch.testing.assert_close(ours[:, 1:], expect, rtol=0, atol=1e-5)
    assert torch.equal(ours[:, :1], torch.nn.functional.interpolate(condition, size=(8, 8)))
    module = sys.modules[d.StableDiffusionInpaintPipeline.__module__]
    monkeypatch.setattr(module, "randn_tensor", lambda shape, **kw: (latent0 / pipe.scheduler.init_noise_sigma).clone())
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, image=rgb, mask_image=mask, masked_image_latents=ours[:, 1:],
                height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=SCALE)
    for what, got, ref in (("latents", final, pipe(output_type="latent", **call).images),
                           ("images", images, pipe(output_type="pt", **call).images)):
        med, p999 = quantiles(got, ref)
        print(f"9-channel inpainting UNet {what}: median {med:.2e}, 99.9% {p999:.2e}")
        assert med < 1e-6 and p999 < 1e-5, (med, p999)


def test_the_two_kinds_of_unet_refuse_the_other_method(sd, sd9, files):
    plain = ModelPipeline(path=str(sd)).run(NodeContext.detached())
    from samplegraph.nodes.pipelines.inpaint_condition import ModelInpaintCondition
    pixels, mask = torch.rand(1, 3, SIZE, SIZE), LoadMask(path=str(files[1])).run()
    with pytest.raises(NodeError, match="not an inpainting UNet.*sampler.inpaint"):
        ModelInpaintCondition().run(plain.model, plain.vae, pixels, mask)
    wf = unet_workflow(sd9, files)
    wf["nodes"]["cond"]["inputs"]["model"] = wf["nodes"]["uncond"]["inputs"]["model"] = "pipe.model"
    with pytest.raises(Exception, match="inpainting UNet.*bind the image and mask with model.inpaint_condition"):
        run(wf, "sample")


@pytest.mark.slow  # ~30 s, mostly the CLI process's imports; the workflow itself runs in the parity test above
@pytest.mark.parametrize("path", folder_workflows("sd_inpaint"), ids=[p.stem for p in folder_workflows("sd_inpaint")])
def test_inpainting_unet_workflows_run_through_the_cli(sd9, path, tmp_path):
    run_through_cli(path, sd9, tmp_path, SIZE)
