"""model.pipeline on a tiny random-weight SDXL pipeline built offline (tests/helpers_pipeline_sdxl.py): the
txt2img graph equals diffusers' StableDiffusionXLPipeline.__call__ on the same folder, prompt, initial latents and
scheduler (Euler on 'leading' timesteps, SDXL base's config), with CFG over an empty negative prompt (zeros:
force_zeros_for_empty_prompt) and over a non-empty one, without CFG, and with explicit original size, crop and
target size, with prompt_2 / negative_prompt_2; img2img equals StableDiffusionXLImg2ImgPipeline on a base and on a
refiner folder. Final latents and decoded images to float32 precision (median and 99.9th percentile of
|err| / RMS(reference)). The encoder's facts are checked against diffusers' encode_prompt and the encoders' own
outputs; bad folders are located errors; workflows/txt2img_sdxl.json runs through the CLI.

A tiny SDXL refiner (OpenCLIP-G alone, 5 time ids, requires_aesthetics_score): its encoder equals
StableDiffusionXLImg2ImgPipeline.encode_prompt and its time ids _get_add_time_ids'; workflows/txt2img_sdxl_refiner.json
(the base to sigmas.split_at_fraction's cut, the refiner from there) equals diffusers' ensemble of expert denoisers,
StableDiffusionXLPipeline(denoising_end=0.8) -> StableDiffusionXLImg2ImgPipeline(denoising_start=0.8), from the same
noise; the cut equals diffusers' on many grids; options of the other kind of folder are refused by name."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from helpers_pipeline import assert_parity, img2img_workflow, quantiles, run_through_cli
from helpers_pipeline_sdxl import POOLED, SDXL_SCHEDULER, WIDTHS, build_sdxl_pipeline, build_sdxl_refiner
from helpers_workflows import folder_workflows
from peers import diffusers
from samplegraph import Runtime
from samplegraph.graph.errors import NodeError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.models.networks.diffusers_net import scheduler_sampling
from samplegraph.nodes.models.parametrisation import NetworkDenoiser
from samplegraph.nodes.models.sampling import RectifiedFlowSampling
from samplegraph.nodes.pipelines.pipeline import ModelPipeline
from samplegraph.nodes.pipelines.text_encode import TextEncode
from samplegraph.nodes.pipelines.types import Conditioning, EncodeOptions
from samplegraph.nodes.schedules.split_at_fraction import SplitAtFraction
from samplegraph.nodes.schedules.uniform_timesteps import UniformTimesteps

ROOT = Path(__file__).resolve().parents[1]
TXT2IMG = ROOT / "workflows" / "txt2img_sdxl.json"
WIDTH, HEIGHT, STEPS, SCALE = 64, 48, 4, 5.0  # non-square: 6 x 8 latents through the VAE's factor 8
PROMPT, NEGATIVE = "a red cat on a mat", "blurry"


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory) -> Path:
    diffusers()  # skip without the peer
    return build_sdxl_pipeline(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="module")
def refiner(tmp_path_factory) -> Path:
    diffusers()
    return build_sdxl_refiner(tmp_path_factory.mktemp("tiny_sdxl_refiner"))


@pytest.fixture(scope="module")
def pipe(sdxl):
    return diffusers_pipe(sdxl)


@pytest.fixture(scope="module")
def ours(sdxl):
    return ModelPipeline(path=str(sdxl)).run(NodeContext.detached())


def diffusers_pipe(path: Path, kind: str = "StableDiffusionXLPipeline"):
    pipe = getattr(diffusers(), kind).from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                      add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def txt2img(path: Path, negative: str = "", scale: float = SCALE, **options) -> dict:
    wf = json.loads(TXT2IMG.read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"] = str(path)
    n["prompt"]["params"].update(prompt=PROMPT, **options)
    n["negative"]["params"].update(prompt=negative, **options)  # diffusers' negative time ids are the prompt's
    n["guided"]["params"]["scale"] = scale
    n["sigmas"]["params"]["steps"] = STEPS
    n["latent"]["params"].update(width=WIDTH, height=HEIGHT)
    return wf


def run(wf: dict, *outputs: str) -> list:
    result = Runtime(device="cpu").run(wf, outputs=list(outputs))
    return [result[o] for o in outputs]


def assert_close(what: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    med, p999 = quantiles(ours, ref)
    print(f"{what}: median {med:.2e}, 99.9% {p999:.2e}")
    assert med < 1e-6 and p999 < 1e-5, (what, med, p999)


SIZES = dict(original_size=(96, 128), crop_top_left=(8, 16), target_size=(40, 72))
CASES = {  # name: (negative prompt here, diffusers' negative_prompt, guidance scale, text.encode options)
    "cfg_empty_negative_zeros": ("", None, SCALE, {}),
    "cfg_negative_prompt": (NEGATIVE, NEGATIVE, SCALE, {}),
    "no_cfg": ("", None, 1.0, {}),
    "cfg_explicit_sizes": (NEGATIVE, NEGATIVE, SCALE, SIZES),
}


@pytest.mark.parametrize("case", CASES)
def test_txt2img_equals_diffusers_sdxl_pipeline(sdxl, pipe, case):
    negative, ref_negative, scale, options = CASES[case]
    wf = txt2img(sdxl, negative, scale, **options)
    if scale == 1.0:  # diffusers skips the unconditional branch at guidance_scale <= 1
        wf["nodes"]["sample"]["inputs"]["denoise"] = "cond"
    sizes = {"original_size": options.get("original_size"), "target_size": options.get("target_size"),
             "crops_coords_top_left": options.get("crop_top_left", (0, 0))}
    assert_txt2img_parity(case, pipe, wf, negative_prompt=ref_negative, guidance_scale=scale, **sizes)


def assert_txt2img_parity(label: str, pipe, wf: dict, **call) -> None:
    """The workflow's final latents and images equal `pipe`'s (StableDiffusionXLPipeline.__call__ with PROMPT and
    `call`) from the same initial latents, on the same sigmas."""
    latent0, sigmas, final, images = run(wf, "latent", "sigmas", "sample", "decode")
    pipe.scheduler.set_timesteps(STEPS)
    assert torch.allclose(sigmas.values.float(), pipe.scheduler.sigmas, rtol=1e-5, atol=1e-6), (sigmas.values,
                                                                                      pipe.scheduler.sigmas)
    # diffusers multiplies the given latents by init_noise_sigma, sqrt(sigma_max^2 + 1) for 'leading' spacing
    noise = (latent0 / pipe.scheduler.init_noise_sigma).float()
    call = dict(prompt=PROMPT, num_inference_steps=STEPS, height=HEIGHT, width=WIDTH, **call)
    ref_latent = pipe(latents=noise.clone(), output_type="latent", **call).images
    ref_images = pipe(latents=noise.clone(), output_type="pt", **call).images
    assert_close(f"{label} latents", final, ref_latent)
    assert_close(f"{label} images", images, ref_images)
    assert final.abs().max() > 0.1 and images.std() > 1e-3  # not a trivially equal pair


PROMPT_2, NEGATIVE_2 = "an oil painting", "low contrast"


@pytest.mark.parametrize("negative", [NEGATIVE, ""], ids=["negative", "empty_negative"])
def test_prompt_2_goes_to_openclip_g_as_diffusers_prompt_2(sdxl, pipe, negative):
    """prompt_2 / negative_prompt_2 (text.encode's prompt_2 on each node) reach text_encoder_2 (and the pooled
    output); an empty negative prompt with a negative_prompt_2 is encoded (not zeros) as diffusers' negative_prompt
    '' is, although the folder forces zeros for an omitted one."""
    wf = txt2img(sdxl, negative)
    wf["nodes"]["prompt"]["params"]["prompt_2"] = PROMPT_2
    wf["nodes"]["negative"]["params"]["prompt_2"] = NEGATIVE_2
    assert_txt2img_parity(f"prompt_2 {negative!r}", pipe, wf, prompt_2=PROMPT_2, negative_prompt=negative,
                          negative_prompt_2=NEGATIVE_2, guidance_scale=SCALE)


def test_prompt_2_none_is_the_prompt_and_changes_only_the_openclip_g_half(ours):
    def encode(prompt: str, **params) -> Conditioning:
        return TextEncode(prompt=prompt, **params).run(ours.text_encoder, NodeContext.detached())

    default, same, other = encode(PROMPT), encode(PROMPT, prompt_2=PROMPT), encode(PROMPT, prompt_2=PROMPT_2)
    assert torch.equal(default.embeddings, same.embeddings) and torch.equal(default.pooled, same.pooled)
    assert torch.equal(other.embeddings[..., :WIDTHS[0]], default.embeddings[..., :WIDTHS[0]])
    assert not torch.allclose(other.embeddings[..., WIDTHS[0]:], default.embeddings[..., WIDTHS[0]:], atol=1e-3)
    assert not torch.allclose(other.pooled, default.pooled, atol=1e-3)
    empty, half = encode(""), encode("", prompt_2=PROMPT_2)  # zeros only when both texts are empty
    assert not empty.embeddings.any() and half.embeddings.abs().max() > 0 and half.pooled.abs().max() > 0
    with pytest.raises(NodeError, match="'prompt_3' does not apply to a 'sdxl' text encoder"):
        encode(PROMPT, prompt_3=PROMPT_2)


def test_explicit_sizes_and_the_negative_prompt_change_the_result(sdxl):
    """Each conditioning input reaches the UNet (else the parity above could hold vacuously)."""
    base, negative, sized = (run(txt2img(sdxl, neg, **opts), "sample")[0]
                             for neg, opts in (("", {}), (NEGATIVE, {}), ("", SIZES)))
    assert not torch.allclose(base, negative, atol=1e-3) and not torch.allclose(base, sized, atol=1e-3)


@pytest.mark.parametrize("which", ["sdxl", "refiner"])
def test_img2img_equals_diffusers_sdxl_img2img_pipeline(request, which, tmp_path, monkeypatch):
    """load_image -> vae.encode -> denoise_strength -> latent.add_noise -> sample equals
    StableDiffusionXLImg2ImgPipeline given our encoded latents as its image and our noised latents as its start
    (its own add_noise of our noise agrees with them to float32 rounding, checked first); on a base folder and on a
    refiner's (its negative prompt's node at diffusers' negative_aesthetic_score 2.5)."""
    path = request.getfixturevalue(which)
    wf = img2img_workflow("img2img.json", path, tmp_path, (HEIGHT, WIDTH), (PROMPT, NEGATIVE), SCALE, STEPS, 0.5)
    n = wf["nodes"]
    if which == "refiner":
        n["negative"]["params"]["aesthetic_score"] = 2.5
    n["full"] = {"kind": "schedule.uniform_timesteps", "inputs": {"model": "cond"},  # SDXL's scheduler grid
                 "params": {"steps": STEPS, "spacing": "leading", "steps_offset": 1}}
    n["pipe"]["params"]["timestep"] = "rounded"  # diffusers' leading timesteps are integers
    encoded, noised, sigmas, final, images = run(wf, "encode", "noised", "sigmas", "sample", "decode")
    assert sigmas.steps == 2 and encoded.shape == (1, 4, HEIGHT // 8, WIDTH // 8)
    img2img = diffusers_pipe(path, "StableDiffusionXLImg2ImgPipeline")
    img2img.scheduler.set_timesteps(STEPS)
    eps = ((noised - encoded) / sigmas.values[0]).float()
    start = img2img.scheduler.timesteps[STEPS - sigmas.steps:][:1]  # diffusers' first img2img timestep
    assert torch.allclose(img2img.scheduler.add_noise(encoded, eps, start), noised, atol=2e-6)
    monkeypatch.setattr(sys.modules[type(img2img).__module__], "randn_tensor", lambda shape, **kw: eps.clone())
    monkeypatch.setattr(img2img.scheduler, "add_noise", lambda x0, noise, t: noised.float().clone())
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, image=encoded.clone(), strength=0.5,
                num_inference_steps=STEPS, guidance_scale=SCALE)
    assert_close(f"{which} img2img latents", final, img2img(output_type="latent", **call).images)
    assert_close(f"{which} img2img images", images, img2img(output_type="pt", **call).images)


def test_encoder_is_both_penultimate_layers_without_the_final_norm_and_g_pooled(ours, pipe):
    """embeddings = [CLIP-L hidden_states[-(k+2)], CLIP-G hidden_states[-(k+2)]] on D, not layer-normed; pooled =
    CLIP-G's text_embeds; equal to diffusers' encode_prompt for clip_skip 0 and 1."""
    enc = ours.text_encoder
    ids = [tok([PROMPT], padding="max_length", max_length=77, return_tensors="pt").input_ids
           for tok in (pipe.tokenizer, pipe.tokenizer_2)]
    with torch.no_grad():
        outs = [te(i, output_hidden_states=True) for te, i in zip((pipe.text_encoder, pipe.text_encoder_2), ids)]
    for skip in (0, 1):
        cond, lost = enc.encode([PROMPT], EncodeOptions(clip_skip=skip))
        assert cond.embeddings.shape == (1, 77, sum(WIDTHS)) and cond.pooled.shape == (1, POOLED) and lost == [""]
        expect = torch.cat([o.hidden_states[-(skip + 2)] for o in outs], dim=-1)
        assert torch.equal(cond.embeddings, expect) and torch.equal(cond.pooled, outs[1].text_embeds)
        ref, _, ref_pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False,
                                                   clip_skip=None if skip == 0 else skip)
        assert torch.equal(cond.embeddings, ref) and torch.equal(cond.pooled, ref_pooled)
    normed = pipe.text_encoder_2.text_model.final_layer_norm(outs[1].hidden_states[-2])
    assert not torch.allclose(cond.embeddings[..., WIDTHS[0]:], normed, atol=1e-3)  # the norm is not applied
    with pytest.raises(NodeError, match="clip_skip"):
        enc.encode([PROMPT], EncodeOptions(clip_skip=3))
    long = "word " * 60  # 300 characters: far past 77 tokens; truncated as diffusers does, the lost text reported
    (cond, lost), tok = enc.encode([long], EncodeOptions()), pipe.tokenizer
    assert cond.embeddings.shape[1] == 77 and lost == [tok.decode(tok(long).input_ids[76:-1])] and lost[0]


def test_empty_prompt_is_zeros_only_where_the_folder_forces_it(sdxl, ours, tmp_path):
    """force_zeros_for_empty_prompt (model_index.json): '' gives zero embeddings and pooled; without it '' is
    encoded, as diffusers' encode_prompt does for negative_prompt None."""
    cond, _ = ours.text_encoder.encode(["", PROMPT], EncodeOptions())
    assert not cond.embeddings[0].any() and not cond.pooled[0].any() and cond.embeddings[1].abs().max() > 0
    root = Path(shutil.copytree(sdxl, tmp_path / "no_zeros"))
    index = json.loads((root / "model_index.json").read_text())
    (root / "model_index.json").write_text(json.dumps({**index, "force_zeros_for_empty_prompt": False}))
    cond, _ = ModelPipeline(path=str(root)).run(NodeContext.detached()).text_encoder.encode([""], EncodeOptions())
    _, ref, _, ref_pooled = diffusers_pipe(root).encode_prompt(PROMPT, device="cpu")
    assert cond.embeddings.abs().max() > 0 and torch.equal(cond.embeddings, ref) and torch.equal(cond.pooled,
                                                                                                 ref_pooled)


def test_time_ids_default_to_the_latents_pixel_size_and_round_trip_the_disk_cache(sdxl, tmp_path):
    wf = txt2img(sdxl, original_size=(96, 128))
    first, second = (Runtime(device="cpu", cache_dir=tmp_path).run(wf, outputs=["prompt", "sample"])
                     for _ in range(2))
    assert {n.node: n.cache for n in second.report.nodes}["prompt"] == "disk"
    assert torch.equal(first["prompt"].extras["time_ids"], torch.tensor([[96.0, 128, 0, 0, -1, -1]]))
    assert torch.equal(second["prompt"].extras["time_ids"], first["prompt"].extras["time_ids"])
    assert torch.equal(first["sample"], second["sample"])
    # the default target size is the latent's (height, width) times 8: stating it explicitly changes nothing
    (explicit,) = run(txt2img(sdxl, original_size=(96, 128), target_size=(HEIGHT, WIDTH)), "sample")
    assert torch.equal(explicit, first["sample"])


def test_bad_sizes_and_options_of_other_families_are_refused_by_name(ours):
    for options, match in [(dict(original_size=(0, 64)), "'original_size' is \\(0, 64\\)"),
                           (dict(crop_top_left=(-1, 0)), "'crop_top_left'")]:
        with pytest.raises(NodeError, match=match):
            ours.text_encoder.encode([PROMPT], EncodeOptions(**options))
    with pytest.raises(NodeError, match="'max_sequence_length' does not apply to a 'sdxl' text encoder"):
        TextEncode(prompt=PROMPT, max_sequence_length=8).run(ours.text_encoder, NodeContext.detached())


def test_conditioning_of_another_family_or_without_pooled_is_refused_when_bound(ours):
    with pytest.raises(NodeError, match="'sd' text encoder"):
        ours.model.bind(Conditioning(torch.zeros(1, 77, sum(WIDTHS)), "sd"))
    with pytest.raises(NodeError, match=f"pooled width None.*takes pooled width {POOLED} and 6 time ids"):
        ours.model.bind(Conditioning(torch.zeros(1, 77, sum(WIDTHS)), "sdxl"))


def test_a_vae_with_latents_mean_and_std_scales_as_the_sdxl_pipelines_do():
    """(z - mean) * scaling_factor / std to latents and back (StableDiffusionXL(Img2Img)Pipeline's formulas), per
    channel; shift_factor is then unused."""
    from helpers_pipeline import VAE
    from samplegraph.nodes.pipelines.sd import KLVae
    mean, std = [0.1, -0.2, 0.3, 0.0], [0.5, 1.5, 1.0, 2.0]
    torch.manual_seed(0)
    vae = diffusers().AutoencoderKL(**VAE, latents_mean=mean, latents_std=std, scaling_factor=0.5).eval()
    mean_t, std_t = torch.tensor(mean).view(1, 4, 1, 1), torch.tensor(std).view(1, 4, 1, 1)
    images = torch.rand(2, 3, 16, 16)
    latents = KLVae(vae).encode(images)
    with torch.no_grad():
        z = vae.encode(images * 2 - 1).latent_dist.mode()  # (2, 4, 2, 2)
        decoded = (vae.decode(latents * std_t / 0.5 + mean_t).sample / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(latents, (z - mean_t) * 0.5 / std_t, atol=1e-6)
    assert torch.allclose(KLVae(vae).decode(latents), decoded, atol=1e-6)


def test_a_float16_run_keeps_a_force_upcast_vae_in_float32_unless_dtypes_names_it(sdxl):
    """diffusers decodes SDXL's VAE (force_upcast) in float32 when the pipeline is float16."""
    dtype_of = {name: next(module.parameters()).dtype for name, module in components(ModelPipeline(
        path=str(sdxl), dtype="float16").run(NodeContext.detached())).items()}
    assert dtype_of == {"unet": torch.float16, "text_encoder_2": torch.float16, "vae": torch.float32}
    pipe = ModelPipeline(path=str(sdxl), dtype="float16", dtypes={"vae": "float16"}).run(NodeContext.detached())
    assert next(pipe.vae.vae.parameters()).dtype == torch.float16


def components(pipe) -> dict[str, torch.nn.Module]:
    return {"unet": pipe.model.net.unet, "text_encoder_2": pipe.text_encoder.encoders[1], "vae": pipe.vae.vae}


def load_error(path: Path, match: str) -> None:
    with pytest.raises(NodeError, match=match):
        ModelPipeline(path=str(path)).run(NodeContext.detached())


def test_missing_text_encoder_2_is_a_located_error(sdxl, tmp_path):
    root = Path(shutil.copytree(sdxl, tmp_path / "copy"))
    shutil.rmtree(root / "text_encoder_2")
    load_error(root, "missing the 'text_encoder_2/' folder that model_index.json lists \\(CLIPTextModelWithProjection")
    index = json.loads((root / "model_index.json").read_text())
    (root / "model_index.json").write_text(json.dumps({**index, "text_encoder_2": [None, None]}))
    load_error(root, "names no 'text_encoder_2' component; a SDXL pipeline needs")


def test_tokenizer_2_that_does_not_match_text_encoder_2_is_refused(tmp_path):
    root = build_sdxl_pipeline(tmp_path / "small", vocab_size_2=100)  # tokenizer_2 has ~190 tokens
    load_error(root, "tokenizer_2' has .* tokens but the text encoder's vocab_size is 100: the tokenizer does not "
                     "belong")


def test_the_legacy_clip_eos_token_id_2_is_accepted_when_the_end_token_is_the_last_id(tmp_path):
    """SD 1.5's and SDXL's text encoder configs say eos_token_id 2 (transformers then pools at the largest id, the end
    token of CLIP's real vocabulary): accepted when that holds for the tokenizer, refused otherwise."""
    from types import SimpleNamespace

    from helpers_pipeline import save_tokenizer, tiny_vocab
    from samplegraph.nodes.pipelines.folder import load_tokenizer
    vocab = [t for t in tiny_vocab() if t != "<|endoftext|>"] + ["<|endoftext|>"]  # the end token last, as CLIP's
    save_tokenizer(tmp_path / "last", {t: i for i, t in enumerate(vocab)})
    save_tokenizer(tmp_path / "first")  # the end token is id 1
    legacy = SimpleNamespace(config=SimpleNamespace(vocab_size=len(vocab), max_position_embeddings=77, eos_token_id=2))
    assert load_tokenizer(tmp_path / "last", "CLIPTokenizer", legacy).eos_token_id == len(vocab) - 1
    with pytest.raises(NodeError, match="expects 1 \\(eos_token_id 1\\)"):
        load_tokenizer(tmp_path / "last", "CLIPTokenizer", SimpleNamespace(config=SimpleNamespace(
            vocab_size=len(vocab), max_position_embeddings=77, eos_token_id=1)))
    with pytest.raises(NodeError, match=f"expects {len(vocab) - 1} \\(eos_token_id 2\\)"):
        load_tokenizer(tmp_path / "first", "CLIPTokenizer", legacy)


@pytest.mark.parametrize("path", folder_workflows("sdxl"), ids=[p.stem for p in folder_workflows("sdxl")])
def test_sdxl_workflows_run_through_the_cli(sdxl, path, tmp_path):
    run_through_cli(path, sdxl, tmp_path, 64)


# SDXL refiners (requires_aesthetics_score: OpenCLIP-G alone, 5 time ids) and the base -> refiner hand-off
ENSEMBLE = ROOT / "workflows" / "txt2img_sdxl_refiner.json"
ENSEMBLE_STEPS, FRACTION = 10, 0.8  # 10 leading steps: 8 on the base, 2 on the refiner


@pytest.fixture(scope="module")
def ours_refiner(refiner):
    return ModelPipeline(path=str(refiner)).run(NodeContext.detached())


def encode(encoder, **params):
    return TextEncode(**{"prompt": PROMPT, **params}).run(encoder, NodeContext.detached())


def test_refiner_encodes_with_openclip_g_alone_as_img2img_encode_prompt(refiner, ours_refiner):
    """text_encoder null: tokens = text_encoder_2's hidden_states[-2] (B, 77, D_G), pooled its text_embeds; time ids
    (1, 5) = original size (the latent's: -1) + crop + aesthetic score (6.0; 2.5 for diffusers' negative)."""
    pipe = diffusers_pipe(refiner, "StableDiffusionXLImg2ImgPipeline")
    emb, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, device="cpu")
    enc = ours_refiner.text_encoder
    cond, uncond = encode(enc), encode(enc, prompt="", aesthetic_score=2.5)
    assert cond.embeddings.shape == (1, 77, WIDTHS[1]) and torch.equal(cond.embeddings, emb)
    assert torch.equal(cond.pooled, pooled)
    assert torch.equal(uncond.embeddings, negative) and torch.equal(uncond.pooled, negative_pooled)  # '' encoded
    assert uncond.embeddings.abs().max() > 0  # the refiner's force_zeros_for_empty_prompt is false
    ids, negative_ids = pipe._get_add_time_ids((HEIGHT, WIDTH), (8, 16), (HEIGHT, WIDTH), 6.0, 2.5, (HEIGHT, WIDTH),
                                               (8, 16), (HEIGHT, WIDTH), torch.float32, int(pooled.shape[-1]))
    assert torch.equal(cond.extras["time_ids"], torch.tensor([[-1.0, -1, 0, 0, 6.0]]))
    sized = dict(original_size=(HEIGHT, WIDTH), crop_top_left=(8, 16))
    assert torch.equal(encode(enc, **sized).extras["time_ids"], ids)
    assert torch.equal(encode(enc, **sized, aesthetic_score=2.5).extras["time_ids"], negative_ids)


def test_options_of_the_other_kind_of_sdxl_folder_are_refused_by_name(ours, ours_refiner):
    base, ours = ours, ours_refiner
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
    flow = NetworkDenoiser(torch.nn.Identity(), RectifiedFlowSampling(3.0, multiplier=1000), "flow")
    with pytest.raises(NodeError, match="RectifiedFlowSampling\\) is continuous-time; cut with sigmas.split_at"):
        SplitAtFraction(fraction=0.8).run(flow, leading)


def ensemble(sdxl: Path, refiner: Path) -> dict:
    wf = json.loads(ENSEMBLE.read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"], n["refiner"]["params"]["path"] = str(sdxl), str(refiner)
    for name in ("prompt", "refiner_prompt"):
        n[name]["params"]["prompt"] = PROMPT
    n["guided"]["params"]["scale"] = n["refiner_guided"]["params"]["scale"] = SCALE
    n["sigmas"]["params"]["steps"], n["split"]["params"]["fraction"] = ENSEMBLE_STEPS, FRACTION
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
    base.scheduler.set_timesteps(ENSEMBLE_STEPS)
    noise = (latent0 / base.scheduler.init_noise_sigma).float()  # diffusers scales its latents by it
    call = dict(prompt=PROMPT, num_inference_steps=ENSEMBLE_STEPS, guidance_scale=SCALE)
    ref_handed = base(latents=noise, height=HEIGHT, width=WIDTH, denoising_end=FRACTION, output_type="latent",
                      **call).images
    second = diffusers_pipe(refiner, "StableDiffusionXLImg2ImgPipeline")
    outputs = [second(image=ref_handed.clone(), denoising_start=FRACTION, output_type=kind, **call).images
               for kind in ("latent", "pt")]
    assert_parity("sdxl base -> refiner", [("base latents", handed, ref_handed), ("latents", final, outputs[0]),
                                           ("images", images, outputs[1])])
    assert (final - handed).abs().max() > 0.1 and images.std() > 1e-3  # the refiner did change the latents


@pytest.mark.parametrize("path", folder_workflows("sdxl_refiner"),
                         ids=[p.stem for p in folder_workflows("sdxl_refiner")])
def test_sdxl_refiner_workflows_run_through_the_cli(sdxl, refiner, path, tmp_path):
    run_through_cli(path, {"pipe": sdxl, "refiner": refiner}, tmp_path, 64)
