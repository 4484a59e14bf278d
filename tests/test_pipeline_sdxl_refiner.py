"""model.pipeline on a tiny random-weight SDXL refiner built offline (tests/helpers_pipeline_sdxl.py: OpenCLIP-G
alone, 5 time ids, requires_aesthetics_score): its encoder equals StableDiffusionXLImg2ImgPipeline.encode_prompt and
its time ids _get_add_time_ids'; workflows/txt2img_sdxl_refiner.json (base to sigmas.split_at_fraction's cut, the
refiner from there) equals diffusers' ensemble of expert denoisers, StableDiffusionXLPipeline(denoising_end=0.8) ->
StableDiffusionXLImg2ImgPipeline(denoising_start=0.8), on the same noise: base latents, final latents and images to
float32 precision; the cut equals diffusers' on many grids; options of the other kind of folder are refused by name."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers_pipeline import assert_parity, run_outputs as run, run_through_cli
from helpers_pipeline_sdxl import SDXL_SCHEDULER, WIDTHS, build_sdxl_pipeline, build_sdxl_refiner
from helpers_workflows import folder_workflows
from peers import diffusers
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.models.networks.diffusers_net import scheduler_sampling
from samplegraph.nodes.models.parametrisation import NetworkDenoiser
from samplegraph.nodes.pipelines.pipeline import ModelPipeline
from samplegraph.nodes.pipelines.split_at_fraction import SplitAtFraction
from samplegraph.nodes.pipelines.text_encode import TextEncode
from samplegraph.nodes.schedules.uniform_timesteps import UniformTimesteps

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "txt2img_sdxl_refiner.json"
WIDTH, HEIGHT, STEPS, SCALE, FRACTION = 64, 48, 10, 5.0, 0.8  # 10 leading steps: 8 on the base, 2 on the refiner
PROMPT = "a red cat on a mat"


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory) -> Path:
    diffusers()  # skip without the peer
    return build_sdxl_pipeline(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="module")
def refiner(tmp_path_factory) -> Path:
    diffusers()
    return build_sdxl_refiner(tmp_path_factory.mktemp("tiny_sdxl_refiner"))


@pytest.fixture(scope="module")
def ours(refiner):
    return ModelPipeline(path=str(refiner)).run(NodeContext.detached())


def diffusers_pipe(path: Path, kind: str):
    pipe = getattr(diffusers(), kind).from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                      add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode(encoder, **params):
    return TextEncode(**{"prompt": PROMPT, **params}).run(encoder, NodeContext.detached())


def test_refiner_encodes_with_openclip_g_alone_as_img2img_encode_prompt(refiner, ours):
    """text_encoder null: tokens = text_encoder_2's hidden_states[-2] (B, 77, D_G), pooled its text_embeds; time ids
    (1, 5) = original size (the latent's: -1) + crop + aesthetic score (6.0; 2.5 for diffusers' negative)."""
    pipe = diffusers_pipe(refiner, "StableDiffusionXLImg2ImgPipeline")
    emb, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, device="cpu")
    cond, uncond = encode(ours.text_encoder), encode(ours.text_encoder, prompt="", aesthetic_score=2.5)
    assert cond.embeddings.shape == (1, 77, WIDTHS[1]) and torch.equal(cond.embeddings, emb)
    assert torch.equal(cond.pooled, pooled)
    assert torch.equal(uncond.embeddings, negative) and torch.equal(uncond.pooled, negative_pooled)  # '' encoded
    assert uncond.embeddings.abs().max() > 0  # the refiner's force_zeros_for_empty_prompt is false
    ids, negative_ids = pipe._get_add_time_ids((HEIGHT, WIDTH), (8, 16), (HEIGHT, WIDTH), 6.0, 2.5, (HEIGHT, WIDTH),
                                               (8, 16), (HEIGHT, WIDTH), torch.float32, int(pooled.shape[-1]))
    assert torch.equal(cond.extras["time_ids"], torch.tensor([[-1.0, -1, 0, 0, 6.0]]))
    assert torch.equal(encode(ours.text_encoder, original_size=(HEIGHT, WIDTH), crop_top_left=(8, 16))
                       .extras["time_ids"], ids)
    assert torch.equal(encode(ours.text_encoder, original_size=(HEIGHT, WIDTH), crop_top_left=(8, 16),
                              aesthetic_score=2.5).extras["time_ids"], negative_ids)


def test_options_of_the_other_kind_of_sdxl_folder_are_refused_by_name(sdxl, ours):
    base = ModelPipeline(path=str(sdxl)).run(NodeContext.detached())
    for encoder, name, value, match in [
            (ours.text_encoder, "target_size", (64, 64), "'target_size' does not apply to a 'sdxl' refiner text"),
            (ours.text_encoder, "prompt_2", "a dog", "'prompt_2' does not apply to a 'sdxl' refiner text"),
            (base.text_encoder, "aesthetic_score", 6.0, "'aesthetic_score' does not apply to a 'sdxl' text")]:
        with pytest.raises(NodeError, match=match):
            encode(encoder, **{name: value})
    with pytest.raises(NodeError, match="cross_attention_dim is 24"):  # the base's conditioning into the refiner
        ours.model.bind(encode(base.text_encoder))
    cond = encode(ours.text_encoder)
    with pytest.raises(NodeError, match="pooled width 20 and 6 time ids, but an SDXL refiner's UNet takes pooled "
                                        "width 20 and 5 time ids"):
        ours.model.bind(type(cond)(cond.embeddings, "sdxl", cond.pooled, {"time_ids": torch.zeros(1, 6)}))


def test_a_folder_whose_aesthetics_flag_does_not_fit_its_unet_is_a_located_error(sdxl, refiner, tmp_path):
    for source, flag, ids in ((sdxl, True, "5 time ids.*it takes 6 ids, as a base"),
                              (refiner, False, "6 time ids.*it takes 5 ids, as a refiner")):
        root = Path(shutil.copytree(source, tmp_path / str(flag)))
        index = json.loads((root / "model_index.json").read_text())
        (root / "model_index.json").write_text(json.dumps({**index, "requires_aesthetics_score": flag}))
        with pytest.raises(NodeError, match=f"{ids}: check requires_aesthetics_score in model_index.json"):
            ModelPipeline(path=str(root)).run(NodeContext.detached())
    root = Path(shutil.copytree(sdxl, tmp_path / "half"))
    index = json.loads((root / "model_index.json").read_text())
    (root / "model_index.json").write_text(json.dumps({**index, "text_encoder": [None, None]}))
    with pytest.raises(NodeError, match="has a tokenizer but model_index.json names no text_encoder"):
        ModelPipeline(path=str(root)).run(NodeContext.detached())


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
def test_split_at_fraction_cuts_where_denoising_end_and_denoising_start_do(spacing):
    """high.steps = the base's steps under denoising_end (timesteps >= round(T - f T)); low.steps = the refiner's
    under denoising_start (timesteps below it): on Euler's grids for many step counts and fractions."""
    config = {**SDXL_SCHEDULER, "timestep_spacing": spacing, **({} if spacing == "leading" else {"steps_offset": 0})}
    sampling, _ = scheduler_sampling({"_class_name": "EulerDiscreteScheduler", **config}, "scheduler")
    model = NetworkDenoiser(torch.nn.Identity(), sampling, "eps")
    sched = diffusers().EulerDiscreteScheduler(**config)
    for steps in (3, 4, 10, 25, 40, 50):
        sigmas = UniformTimesteps(steps=steps, spacing=spacing, steps_offset=config["steps_offset"]).run(model)
        sched.set_timesteps(steps)
        for fraction in (0.5, 0.7, 0.75, 0.8, 0.9):
            cutoff = int(round(1000 - fraction * 1000))
            base = len([t for t in sched.timesteps if t >= cutoff])  # StableDiffusionXLPipeline's rule
            refined = int((sched.timesteps < cutoff).sum())  # StableDiffusionXLImg2ImgPipeline.get_timesteps'
            if not (base and refined):
                continue  # diffusers leaves one pipeline nothing to do: split refuses that (both keep a step)
            split = SplitAtFraction(fraction=fraction).run(model, sigmas)
            assert (split.high.steps, split.low.steps) == (base, refined), (spacing, steps, fraction)
            assert torch.allclose(split.low.values[:-1].float(), sched.sigmas[base:-1], rtol=1e-5, atol=1e-6)
    leading = UniformTimesteps(steps=3, spacing="leading").run(model)  # timesteps 666, 333, 0
    with pytest.raises(NodeError, match="'fraction' is 0.1: 0 of the steps are at timesteps >= 900.*step 1 .. 2"):
        SplitAtFraction(fraction=0.1).run(model, leading)


def ensemble(sdxl: Path, refiner: Path) -> dict:
    wf = json.loads(WORKFLOW.read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"], n["refiner"]["params"]["path"] = str(sdxl), str(refiner)
    for name in ("prompt", "refiner_prompt"):
        n[name]["params"]["prompt"] = PROMPT
    n["guided"]["params"]["scale"] = n["refiner_guided"]["params"]["scale"] = SCALE
    n["sigmas"]["params"]["steps"], n["split"]["params"]["fraction"] = STEPS, FRACTION
    n["latent"]["params"].update(width=WIDTH, height=HEIGHT)
    return wf


def test_base_then_refiner_equals_diffusers_ensemble_of_expert_denoisers(sdxl, refiner):
    """The base's 8 steps to the cut equal StableDiffusionXLPipeline(denoising_end=0.8)'s latents; the refiner's 2
    from there equal StableDiffusionXLImg2ImgPipeline(image=those latents, denoising_start=0.8) (empty negative
    prompts: the base's zeros, the refiner's encoded; aesthetic scores 6.0 / 2.5)."""
    latent0, high, low, handed, final, images = run(ensemble(sdxl, refiner), "latent", "split.high", "split.low",
                                                    "base", "sample", "decode")
    assert (high.steps, low.steps) == (8, 2)
    base = diffusers_pipe(sdxl, "StableDiffusionXLPipeline")
    base.scheduler.set_timesteps(STEPS)
    noise = (latent0 / base.scheduler.init_noise_sigma).float()  # diffusers scales its latents by it
    call = dict(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=SCALE)
    ref_handed = base(latents=noise, height=HEIGHT, width=WIDTH, denoising_end=FRACTION, output_type="latent",
                      **call).images
    second = diffusers_pipe(refiner, "StableDiffusionXLImg2ImgPipeline")
    outputs = [second(image=ref_handed.clone(), denoising_start=FRACTION, output_type=kind, **call).images
               for kind in ("latent", "pt")]
    assert_parity("sdxl base -> refiner", [("base latents", handed, ref_handed), ("latents", final, outputs[0]),
                                           ("images", images, outputs[1])])
    assert (final - handed).abs().max() > 0.1 and images.std() > 1e-3  # the refiner did change the latents


@pytest.mark.parametrize("path", folder_workflows("sdxl_refiner"), ids=[p.stem for p in folder_workflows("sdxl_refiner")])
def test_sdxl_refiner_workflows_run_through_the_cli(sdxl, refiner, path, tmp_path):
    run_through_cli(path, {"pipe": sdxl, "refiner": refiner}, tmp_path, 64)
