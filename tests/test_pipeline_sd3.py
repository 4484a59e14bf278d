"""model.pipeline on a tiny random-weight Stable Diffusion 3 pipeline built offline (tests/helpers_pipeline_sd3.py):
workflows/txt2img_sd3.json (text.encode -> model.text_condition -> guidance.cfg -> schedule.flow_match ->
sampler.euler -> vae.decode) equals diffusers' StableDiffusion3Pipeline.__call__ on the same folder, prompt,
negative prompt, initial latents and flow times, with and without CFG, with and without text_encoder_3 (zeros):
final latents and decoded images to float32 precision. schedule.flow_match is FlowMatchEulerDiscreteScheduler's
grid (all but its first level, t = 1, which is infinite in VE sigma); encode_prompt's arithmetic (penultimate CLIP
states, clip_skip, max_sequence_length) is checked directly; bad folders and inputs are located errors."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers_pipeline import (assert_parity, draw_noise_as, img2img_workflow, run_outputs as run, run_through_cli,
                              txt2img_workflow)
from helpers_pipeline_sd3 import SHIFT, build_sd3_pipeline
from helpers_workflows import folder_workflows
from peers import diffusers
from samplegraph import Runtime
from samplegraph.graph.errors import NodeError, NodeRunError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.pipelines.pipeline import ModelPipeline
from samplegraph.nodes.pipelines.text_encode import TextEncode
from samplegraph.nodes.pipelines.types import Conditioning, EncodeOptions

SIZE, STEPS, SCALE = 64, 4, 5.0  # 64x64 images: 8x8 latents through the VAE's factor 8, 4x4 patches of 2
PROMPT, NEGATIVE = "a red cat on a mat", "blurry"


@pytest.fixture(scope="module")
def sd3(tmp_path_factory) -> Path:
    diffusers()  # skip without the peer
    return build_sd3_pipeline(tmp_path_factory.mktemp("tiny_sd3"))


@pytest.fixture(scope="module")
def sd3_no_t5(tmp_path_factory) -> Path:
    diffusers()
    return build_sd3_pipeline(tmp_path_factory.mktemp("tiny_sd3_no_t5"), t5=False)


def txt2img(path: Path, scale: float = SCALE, steps: int = STEPS) -> dict:
    return txt2img_workflow("txt2img_sd3.json", path, SIZE, (PROMPT, NEGATIVE), scale, steps)


def diffusers_pipe(path: Path):
    d = diffusers()
    no_t5 = json.loads((path / "model_index.json").read_text())["text_encoder_3"][1] is None
    pipe = d.StableDiffusion3Pipeline.from_pretrained(
        path, local_files_only=True, use_safetensors=True,
        **(dict(text_encoder_3=None, tokenizer_3=None) if no_t5 else {}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unshifted(t: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    """The flow times FlowMatchEulerDiscreteScheduler shifts into t (the inverse of s t / (1 + (s - 1) t))."""
    return t / (shift - (shift - 1) * t)


def test_flow_match_schedule_is_the_schedulers_grid_but_its_first_level():
    """sigmas[1:] = FlowMatchEulerDiscreteScheduler(shift 3).set_timesteps(steps).sigmas[1:] in flow time; the
    first, t = 1 (VE infinity), becomes the model's sigma_max, shift(0.999)."""
    from samplegraph.nodes.models.sampling import RectifiedFlowSampling
    from samplegraph.nodes.schedules.flow_match import FlowMatch
    from samplegraph.nodes.models.parametrisation import NetworkDenoiser
    d = diffusers()
    for shift, steps in ((SHIFT, 4), (SHIFT, 28), (1.0, 10), (SHIFT, 1)):
        sampling = RectifiedFlowSampling(shift, multiplier=1000)
        ours = FlowMatch(steps=steps).run(NetworkDenoiser(torch.nn.Identity(), sampling, "flow")).values  # (S + 1,)
        sched = d.FlowMatchEulerDiscreteScheduler(shift=shift)
        sched.set_timesteps(steps)
        t = ours / (1 + ours)  # flow time
        assert t.numel() == steps + 1 and ours[-1] == 0
        torch.testing.assert_close(t[1:], sched.sigmas[1:].double(), rtol=2e-7, atol=0)
        assert sched.sigmas[0] == 1 and ours[0].item() == pytest.approx(sampling.sigma_max, rel=1e-14)
        assert ours[0].item() == pytest.approx(shift * 0.999 / 0.001, rel=1e-12)  # VE sigma' = s sigma
    with pytest.raises(NodeError, match="needs a rectified-flow model"):
        from samplegraph.nodes.models.gmm import ModelGMM
        FlowMatch(steps=4).run(ModelGMM().run())


@pytest.mark.parametrize("t5", [True, False], ids=["t5", "no_t5"])
@pytest.mark.parametrize("scale", [SCALE, 1.0], ids=["cfg", "no_cfg"])
def test_txt2img_equals_diffusers_sd3_pipeline(sd3, sd3_no_t5, t5, scale):
    path = sd3 if t5 else sd3_no_t5
    wf = txt2img(path, scale)
    if scale == 1.0:  # diffusers skips the unconditional branch at guidance_scale <= 1: so does the graph
        wf["nodes"]["sample"]["inputs"]["denoise"] = "cond"
    assert_txt2img_parity(f"sd3 {'t5' if t5 else 'no t5'} scale {scale}", path, wf, guidance_scale=scale)


def assert_txt2img_parity(label: str, path: Path, wf: dict, **call) -> None:
    """The workflow's final latents and images equal StableDiffusion3Pipeline's (PROMPT, NEGATIVE and `call`) from
    the same initial latents and flow times."""
    latent0, sigmas, final, images = run(wf, "latent", "sigmas", "sample", "decode")
    s = sigmas.values  # (S + 1,) VE
    t = s[:-1] / (1 + s[:-1])  # (S,) flow times of the steps
    pipe = diffusers_pipe(path)
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE,
                sigmas=unshifted(t).tolist(), **call)  # the scheduler shifts them back to t
    noise = (latent0 / (1 + s[0])).float()  # x_flow = x / (1 + sigma): diffusers' latents at t_0
    ref_latent = pipe(latents=noise.clone(), output_type="latent", **call).images
    torch.testing.assert_close(pipe.scheduler.sigmas.double(), s / (1 + s), rtol=1e-6, atol=0)
    ref_images = pipe(latents=noise.clone(), output_type="pt", **call).images
    assert_parity(label, [("latents", final, ref_latent), ("images", images, ref_images)])
    assert final.shape == (1, 16, 8, 8) and final.abs().max() > 0.1 and images.std() > 1e-3


# text.encode's prompt_2 / prompt_3 on the prompt's node and on the negative prompt's (diffusers' negative_prompt_2/3)
TEXTS = {"prompt": dict(prompt_2="an oil painting", prompt_3="a photo of a dog"),
         "negative": dict(prompt_2="low contrast", prompt_3="noisy")}


def test_prompt_2_and_3_go_to_clip_g_and_t5_as_diffusers_prompt_2_and_3(sd3):
    wf = txt2img(sd3)
    for name, texts in TEXTS.items():
        wf["nodes"][name]["params"].update(texts)
    negative = {f"negative_{k}": v for k, v in TEXTS["negative"].items()}
    assert_txt2img_parity("sd3 prompt_2/3", sd3, wf, guidance_scale=SCALE, **TEXTS["prompt"], **negative)


def test_prompt_2_and_3_none_are_the_prompt_and_each_changes_only_its_encoders_part(sd3):
    """Tokens are [CLIP-L | CLIP-G | 0 pad] (77 rows) then T5 rows; pooled is [CLIP-L | CLIP-G]."""
    enc = ModelPipeline(path=str(sd3)).run(NodeContext.detached()).text_encoder

    def encode(**params) -> Conditioning:
        return TextEncode(prompt=PROMPT, **params).run(enc, NodeContext.detached())

    default, same = encode(), encode(prompt_2=PROMPT, prompt_3=PROMPT)
    assert torch.equal(default.embeddings, same.embeddings) and torch.equal(default.pooled, same.pooled)
    parts = {"clip_l": (slice(0, 77), slice(0, 8)), "clip_g": (slice(0, 77), slice(8, 24)),
             "t5": (slice(77, None), slice(None))}
    for params, changed in ((dict(prompt_2="an oil painting"), "clip_g"), (dict(prompt_3="an oil painting"), "t5")):
        cond = encode(**params)
        for part, (rows, cols) in parts.items():
            same_part = torch.equal(cond.embeddings[0, rows, cols], default.embeddings[0, rows, cols])
            assert same_part == (part != changed), (params, part)
        assert torch.equal(cond.pooled[:, :32], default.pooled[:, :32])  # CLIP-L's pooled (projection 32) stays
        assert torch.equal(cond.pooled[:, 32:], default.pooled[:, 32:]) == (changed == "t5")


def test_img2img_equals_diffusers_sd3_img2img_pipeline(sd3, tmp_path, monkeypatch):
    """load_image -> vae.encode -> denoise_strength -> latent.add_noise -> sample equals
    StableDiffusion3Img2ImgPipeline given our encoded latents as its image and our noise as its draw
    (flow: scale_noise = t eps + (1 - t) x0 = (x0 + sigma eps) / (1 + sigma))."""
    d = diffusers()
    wf = img2img_workflow("img2img_sd3.json", sd3, tmp_path, SIZE, (PROMPT, NEGATIVE), SCALE, STEPS, 0.5)
    encoded, noised, full, sigmas, final, images = run(wf, "encode", "noised", "full", "sigmas", "sample", "decode")
    assert sigmas.steps == 2 and encoded.shape == (1, 16, 8, 8)
    draw_noise_as(monkeypatch, d.StableDiffusion3Img2ImgPipeline, ((noised - encoded) / sigmas.values[0]).float())
    pipe = d.StableDiffusion3Img2ImgPipeline(**diffusers_pipe(sd3).components)
    pipe.set_progress_bar_config(disable=True)
    s = full.values
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, image=encoded.clone(), strength=0.5, guidance_scale=SCALE,
                num_inference_steps=STEPS, sigmas=unshifted(s[:-1] / (1 + s[:-1])).tolist())
    assert_parity("sd3 img2img", [("latents", final, pipe(output_type="latent", **call).images),
                                  ("images", images, pipe(output_type="pt", **call).images)])


def test_encoder_equals_encode_prompt_with_clip_skip_and_max_sequence_length(sd3):
    """Penultimate CLIP states (clip_skip k: hidden_states[-(k + 2)]), both CLIPs on D, zero-padded to T5's width,
    then the T5 tokens; pooled = both text_embeds; a shorter max_sequence_length gives fewer T5 tokens."""
    pipe = diffusers_pipe(sd3)
    enc = ModelPipeline(path=str(sd3)).run(NodeContext.detached()).text_encoder
    for options, kw in ((EncodeOptions(), {}), (EncodeOptions(clip_skip=1), dict(clip_skip=1)),
                        (EncodeOptions(max_sequence_length=16), dict(max_sequence_length=16))):
        cond, lost = enc.encode([PROMPT], options)
        with torch.no_grad():
            emb, _, pooled, _ = pipe.encode_prompt(PROMPT, None, None, device="cpu", do_classifier_free_guidance=False,
                                                   **kw)
        assert cond.embeddings.shape == (1, 77 + kw.get("max_sequence_length", 256), 32) and lost == [""]
        assert torch.equal(cond.embeddings, emb) and torch.equal(cond.pooled, pooled), options
        assert cond.embeddings[0, :77, 24:].abs().max() == 0  # CLIP-L (8) + CLIP-G (16) padded to 32
    with pytest.raises(NodeError, match="clip_skip' is 3.*0..2"):
        enc.encode([PROMPT], EncodeOptions(clip_skip=3))
    with pytest.raises(NodeError, match="max_sequence_length' is 600.*at most 512"):
        enc.encode([PROMPT], EncodeOptions(max_sequence_length=600))


def test_long_prompt_warns_with_the_text_clip_lost_and_t5_keeps_more(sd3):
    wf = txt2img(sd3)
    wf["nodes"]["prompt"]["params"]["prompt"] = "word " * 30  # 150 characters: past CLIP's 77, within T5's 256
    events = []
    result = Runtime(device="cpu").run(wf, outputs=["prompt"], on_event=events.append)
    warnings = [e for e in events if type(e).__name__ == "NodeWarning"]
    assert len(warnings) == 1 and "77 tokens" in warnings[0].message and "word" in warnings[0].message
    assert result["prompt"].embeddings.shape == (1, 77 + 256, 32)


def test_options_and_conditioning_of_another_family_are_refused_by_name(sd3, tmp_path):
    from helpers_pipeline import build_sd_pipeline
    pipe = ModelPipeline(path=str(sd3)).run(NodeContext.detached())
    for name, value in (("guidance", 3.5), ("original_size", (64, 64))):
        with pytest.raises(NodeError, match=f"'{name}' does not apply to a 'sd3' text encoder"):
            TextEncode(prompt=PROMPT, **{name: value}).run(pipe.text_encoder, NodeContext.detached())
    with pytest.raises(NodeError, match="'sd' text encoder"):
        pipe.model.bind(Conditioning(torch.zeros(1, 77, 32), "sd"))
    with pytest.raises(NodeError, match="joint_attention_dim is 32 and pooled_projection_dim 64"):
        pipe.model.bind(Conditioning(torch.zeros(1, 333, 32), "sd3", torch.zeros(1, 32)))
    sd = build_sd_pipeline(tmp_path / "sd")
    wf = txt2img(sd3)
    wf["nodes"]["sigmas"]["inputs"]["model"] = "sd_cond"  # an SD (discrete VP) model under schedule.flow_match
    wf["nodes"]["sd"] = {"kind": "model.pipeline", "params": {"path": str(sd)}}
    wf["nodes"]["sd_prompt"] = {"kind": "text.encode", "inputs": {"text_encoder": "sd.text_encoder"},
                                "params": {"prompt": PROMPT}}
    wf["nodes"]["sd_cond"] = {"kind": "model.text_condition", "inputs": {"model": "sd.model", "cond": "sd_prompt"}}
    with pytest.raises(NodeRunError, match="sigmas.*DiscreteVPSampling.*needs a rectified-flow model"):
        run(wf, "sigmas")


def test_latent_not_divisible_by_the_patch_size_is_a_located_error(sd3):
    wf = txt2img(sd3, steps=1)
    wf["nodes"]["latent"]["params"].update(width=72, height=72)  # 9x9 latents: patch size 2 does not divide them
    with pytest.raises(NodeRunError, match="sample.*9x9.*patch_size 2.*multiples of 2 x the VAE's factor"):
        run(wf, "sample")


def load_error(path: Path, match: str) -> None:
    with pytest.raises(NodeError, match=match):
        ModelPipeline(path=str(path)).run(NodeContext.detached())


def edit_index(root: Path, **entries) -> None:
    index = json.loads((root / "model_index.json").read_text())
    (root / "model_index.json").write_text(json.dumps({**index, **entries}))


def test_missing_text_encoder_2_and_half_a_t5_are_located_errors(sd3, tmp_path):
    root = Path(shutil.copytree(sd3, tmp_path / "a"))
    shutil.rmtree(root / "text_encoder_2")
    load_error(root, "missing the 'text_encoder_2/' folder")
    root = Path(shutil.copytree(sd3, tmp_path / "b"))
    edit_index(root, text_encoder_2=[None, None])
    load_error(root, "names no 'text_encoder_2' component; a Stable Diffusion 3 pipeline needs")
    root = Path(shutil.copytree(sd3, tmp_path / "c"))
    edit_index(root, tokenizer_3=[None, None])
    load_error(root, "has a text_encoder_3 but model_index.json names no tokenizer_3")


def test_t5_tokenizer_that_does_not_match_the_t5_encoder_is_refused(tmp_path):
    diffusers()
    root = build_sd3_pipeline(tmp_path / "small", t5_vocab=100)  # the T5 tokenizer has 292 tokens
    load_error(root, "tokenizer_3'.*tokens but the text encoder's vocab_size is 100.*does not belong")


def test_per_component_dtypes_reach_the_t5(sd3):
    pipe = ModelPipeline(path=str(sd3), dtypes={"text_encoder_3": "bfloat16"}).run(NodeContext.detached())
    assert pipe.text_encoder.t5[1].dtype == torch.bfloat16
    assert pipe.text_encoder.clips[0].encoder.dtype == torch.float32


@pytest.mark.parametrize("path", folder_workflows("sd3"), ids=[p.stem for p in folder_workflows("sd3")])
def test_sd3_workflows_run_through_the_cli(sd3, path, tmp_path):
    run_through_cli(path, sd3, tmp_path, SIZE)
