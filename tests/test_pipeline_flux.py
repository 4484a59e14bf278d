"""model.pipeline on tiny random-weight Flux pipelines built offline (tests/helpers_pipeline_flux.py): the txt2img graph
(text.encode -> model.text_condition [-> guidance.cfg] -> schedule.flux -> sample -> vae.decode) equals diffusers'
FluxPipeline.__call__ on the same folder, prompt, initial latents (packed) and sigmas, with the guidance embedding
(FLUX.1-dev-like, guidance 3.5 and 1.0), with true CFG over a negative prompt, and without a guidance embedding
(FLUX.1-schnell-like); the pieces (packing, ids, encode_prompt, the shifted grid) equal diffusers' own; bad inputs are
located errors; workflows/txt2img_flux.json runs through the CLI."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_pipeline import assert_parity, draw_noise_as, run_through_cli
from helpers_pipeline_flux import SCHEDULER, build_flux_pipeline
from helpers_workflows import folder_workflows
from peers import diffusers
from samplegraph import Runtime
from samplegraph.graph.errors import NodeError, NodeRunError
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.pipelines.flux import FlowShift, image_ids, pack, unpack
from samplegraph.nodes.pipelines.flux_schedule import FluxSchedule
from samplegraph.nodes.pipelines.pipeline import ModelPipeline
from samplegraph.nodes.pipelines.text_encode import TextEncode
from samplegraph.nodes.pipelines.types import Conditioning, EncodeOptions

ROOT = Path(__file__).resolve().parents[1]
TXT2IMG = ROOT / "workflows" / "txt2img_flux.json"
SIZE, STEPS = 32, 4  # 32x32 images: 16x16 latents through the VAE's factor 2, 64 packed tokens
PROMPT, NEGATIVE = "a red cat on a mat", "blurry"


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Path:
    diffusers()  # skip without the peer
    return build_flux_pipeline(tmp_path_factory.mktemp("tiny_flux"))


@pytest.fixture(scope="module")
def schnell(tmp_path_factory) -> Path:
    diffusers()
    return build_flux_pipeline(tmp_path_factory.mktemp("tiny_flux_schnell"), seed=1, guidance_embeds=False)


def txt2img(path: Path, guidance: float | None = 3.5, cfg: float | None = None, steps: int = STEPS,
            size: int = SIZE) -> dict:
    wf = json.loads(TXT2IMG.read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"] = str(path)
    n["prompt"]["params"] = {"prompt": PROMPT, **({} if guidance is None else {"guidance": guidance})}
    n["sigmas"]["params"].update(steps=steps, width=size, height=size)
    n["latent"]["params"].update(width=size, height=size)
    return with_true_cfg(wf, cfg)


def with_true_cfg(wf: dict, cfg: float | None) -> dict:
    """FluxPipeline's true CFG (a negative prompt and true_cfg_scale) as guidance.cfg over the prompt's node."""
    n = wf["nodes"]
    if cfg is not None:
        n["negative"] = {"kind": "text.encode", "inputs": {"text_encoder": "pipe.text_encoder"},
                         "params": {**n["prompt"]["params"], "prompt": NEGATIVE}}
        n["uncond"] = {"kind": "model.text_condition", "inputs": {"model": "pipe.model", "cond": "negative"}}
        n["guided"] = {"kind": "guidance.cfg", "inputs": {"cond": "cond", "uncond": "uncond"},
                       "params": {"scale": cfg}}
        n["sample"]["inputs"]["denoise"] = "guided"
    return wf


def run(wf: dict, *outputs: str) -> list:
    result = Runtime(device="cpu").run(wf, outputs=list(outputs))
    return [result[o] for o in outputs]


def flux_pipe(path: Path):
    pipe = diffusers().FluxPipeline.from_pretrained(path, local_files_only=True, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flow_times(sigmas: torch.Tensor) -> torch.Tensor:
    return (sigmas / (1 + sigmas)).float()  # (S + 1,) t = sigma / (1 + sigma)


def flux_call(pipe, noise: torch.Tensor, guidance: float | None, cfg: float | None, output_type: str, **texts):
    call = dict(prompt=PROMPT, num_inference_steps=STEPS, height=SIZE, width=SIZE, latents=noise.clone(),
                output_type=output_type, guidance_scale=3.5 if guidance is None else guidance, **texts)
    if cfg is not None:
        call.update(negative_prompt=NEGATIVE, true_cfg_scale=cfg)
    return pipe(**call).images


CASES = [("dev", 3.5, None), ("dev", 1.0, None), ("dev", 3.5, 2.0), ("schnell", None, None), ("schnell", None, 3.0)]


@pytest.mark.parametrize("which, guidance, cfg", CASES, ids=["guidance3.5", "guidance1", "true_cfg2", "schnell",
                                                             "schnell_cfg3"])
def test_txt2img_equals_flux_pipeline(request, which, guidance, cfg):
    path = request.getfixturevalue(which)
    latent0, sigmas, final, images = run(txt2img(path, guidance, cfg), "latent", "sigmas", "sample", "decode")
    pipe = flux_pipe(path)
    noise = pack((latent0 / sigmas.values[0]).float())  # (1, 64, 16): FluxPipeline's packed latents at t = 1
    ref_latent = flux_call(pipe, noise, guidance, cfg, "latent")  # (1, 64, 16), packed
    assert torch.allclose(flow_times(sigmas.values), pipe.scheduler.sigmas, rtol=1e-6, atol=0)
    ref_images = flux_call(pipe, noise, guidance, cfg, "pt")
    assert_parity(request.node.callspec.id, [("latents", pack(final), ref_latent), ("images", images, ref_images)])
    assert final.abs().max() > 0.1 and images.std() > 1e-3  # not a trivially equal pair


PROMPT_2, NEGATIVE_2 = "an oil painting", "low contrast"


def test_prompt_2_goes_to_t5_as_flux_pipelines_prompt_2(dev):
    """text.encode's prompt_2 (diffusers' prompt_2; on the negative prompt's node negative_prompt_2) is T5's text,
    the prompt CLIP's (pooled), under true CFG."""
    wf = txt2img(dev, 3.5, 2.0)
    wf["nodes"]["prompt"]["params"]["prompt_2"] = PROMPT_2
    wf["nodes"]["negative"]["params"]["prompt_2"] = NEGATIVE_2
    latent0, sigmas, final, images = run(wf, "latent", "sigmas", "sample", "decode")
    pipe, noise = flux_pipe(dev), pack((latent0 / sigmas.values[0]).float())
    texts = dict(prompt_2=PROMPT_2, negative_prompt_2=NEGATIVE_2)
    assert_parity("flux prompt_2", [("latents", pack(final), flux_call(pipe, noise, 3.5, 2.0, "latent", **texts)),
                                    ("images", images, flux_call(pipe, noise, 3.5, 2.0, "pt", **texts))])


def test_prompt_2_none_is_the_prompt_and_changes_only_the_t5_tokens(dev):
    enc = ModelPipeline(path=str(dev)).run(NodeContext.detached()).text_encoder

    def encode(**params) -> Conditioning:
        return TextEncode(prompt=PROMPT, **params).run(enc, NodeContext.detached())

    default, same, other = encode(), encode(prompt_2=PROMPT), encode(prompt_2=PROMPT_2)
    assert torch.equal(default.embeddings, same.embeddings) and torch.equal(default.pooled, same.pooled)
    assert torch.equal(other.pooled, default.pooled)
    assert not torch.allclose(other.embeddings, default.embeddings, atol=1e-3)
    with pytest.raises(NodeError, match="'prompt_3' does not apply to a 'flux' text encoder"):
        encode(prompt_3=PROMPT_2)


def img2img(path: Path, tmp_path: Path, strength: float, cfg: float | None = None) -> dict:
    """workflows/img2img_flux.json on `path` over a random SIZE x SIZE input, STEPS full steps."""
    source = tmp_path / "input.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(source)
    wf = json.loads((ROOT / "workflows" / "img2img_flux.json").read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"], n["image"]["params"]["path"] = str(path), str(source)
    n["prompt"]["params"]["prompt"] = PROMPT
    n["full"]["params"].update(steps=STEPS, width=SIZE, height=SIZE)
    n["sigmas"]["params"]["strength"] = strength
    return with_true_cfg(wf, cfg)


@pytest.mark.parametrize("strength, cfg", [(0.5, None), (0.75, None), (0.75, 2.0)],
                         ids=["0.5", "0.75", "0.75_true_cfg2"])
def test_img2img_equals_flux_img2img_pipeline(dev, tmp_path, monkeypatch, strength, cfg):
    """load_image -> vae.encode -> schedule.flux -> denoise_strength -> latent.add_noise -> sample equals
    FluxImg2ImgPipeline given our encoded latents as its image and our noise as its draw (flow: scale_noise =
    t eps + (1 - t) x0 = (x0 + sigma eps) / (1 + sigma)); its own strength cut of the same grid; with a negative
    prompt and true_cfg_scale, guidance.cfg over the two bound prompts."""
    d = diffusers()
    encoded, noised, sigmas, final, images = run(img2img(dev, tmp_path, strength, cfg), "encode", "noised", "sigmas",
                                                 "sample", "decode")
    assert sigmas.steps == round(STEPS * strength) and encoded.shape == (1, 4, 16, 16)
    draw_noise_as(monkeypatch, d.FluxImg2ImgPipeline, ((noised - encoded) / sigmas.values[0]).float())
    pipe = d.FluxImg2ImgPipeline(**flux_pipe(dev).components)
    pipe.set_progress_bar_config(disable=True)
    call = dict(prompt=PROMPT, image=encoded.clone(), strength=strength, num_inference_steps=STEPS, height=SIZE,
                width=SIZE, guidance_scale=3.5, **({} if cfg is None else dict(negative_prompt=NEGATIVE,
                                                                              true_cfg_scale=cfg)))
    ref_latent = pipe(output_type="latent", **call).images  # (1, 64, 16), packed
    assert torch.allclose(flow_times(sigmas.values), pipe.scheduler.sigmas[STEPS - sigmas.steps:], rtol=1e-6, atol=0)
    assert_parity(f"img2img {strength} cfg {cfg}", [("latents", pack(final), ref_latent),
                                          ("images", images, pipe(output_type="pt", **call).images)])
    assert (final - encoded).abs().max() > 0.1 and images.std() > 1e-3


def test_guidance_embedding_changes_the_image_and_cfg_scale_one_is_the_prompt_alone(dev):
    (a,), (b,) = run(txt2img(dev, 3.5), "sample"), run(txt2img(dev, 1.0), "sample")
    assert (a - b).abs().max() > 1e-3 * a.abs().max()
    (one,) = run(txt2img(dev, 3.5, cfg=1.0), "sample")
    assert torch.allclose(one, a, atol=1e-6)


def test_pack_unpack_and_image_ids_are_diffusers(dev):
    pipeline = diffusers().FluxPipeline
    x = torch.randn(2, 4, 6, 10)  # (B, C, h, w)
    packed = pack(x)  # (2, 15, 16)
    assert torch.equal(packed, pipeline._pack_latents(x, 2, 4, 6, 10))
    assert torch.equal(unpack(packed, 6, 10), x)
    assert torch.equal(unpack(packed, 6, 10), pipeline._unpack_latents(packed, 6 * 8, 10 * 8, 8))
    assert torch.equal(image_ids(3, 5, torch.device("cpu"), torch.float32),
                       pipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32))


def test_encode_equals_flux_encode_prompt_and_reports_truncation(dev):
    pipe = flux_pipe(dev)
    enc = ModelPipeline(path=str(dev)).run(NodeContext.detached()).text_encoder
    for length in (512, 8):
        cond, lost = enc.encode([PROMPT], EncodeOptions(max_sequence_length=length))
        with torch.no_grad():  # as __call__ runs it (with autograd on, T5's attention takes another kernel)
            tokens, pooled, _ = pipe.encode_prompt(PROMPT, prompt_2=None, device="cpu", max_sequence_length=length)
        assert cond.embeddings.shape == (1, length, 32) and torch.equal(cond.embeddings, tokens)
        assert torch.equal(cond.pooled, pooled) and cond.extras["guidance"].tolist() == [3.5]
        tok = pipe.tokenizer_2
        assert lost == [tok.decode(tok(PROMPT).input_ids[length - 1:-1]) if length == 8 else ""]
    wf = txt2img(dev)
    wf["nodes"]["prompt"]["params"]["max_sequence_length"] = 8
    events = []
    Runtime(device="cpu").run(wf, outputs=["prompt"], on_event=events.append)
    warnings = [e for e in events if type(e).__name__ == "NodeWarning"]
    assert len(warnings) == 1 and warnings[0].node == "prompt" and repr(lost[0]) in warnings[0].message


def test_schedule_flux_is_flux_pipelines_shifted_grid(dev):
    """FluxPipeline: set_timesteps(sigmas=linspace(1, 1/N, N), mu=calculate_shift(tokens)) on its scheduler."""
    d = diffusers()
    model = ModelPipeline(path=str(dev)).run(NodeContext.detached()).model
    flux = sys.modules[d.FluxPipeline.__module__]
    for config in (SCHEDULER, dict(shift=1.0, use_dynamic_shifting=False), dict(shift=3.0)):
        sched = d.FlowMatchEulerDiscreteScheduler(**config)
        model.shift = FlowShift.from_config(config)
        for steps, width, height in ((1, 32, 32), (4, 32, 48), (28, 1024, 1024), (50, 512, 768)):
            ours = FluxSchedule(steps=steps, width=width, height=height).run(model).values  # (S + 1,) VE
            tokens = (height // 4) * (width // 4)  # packed tokens of the tiny VAE (factor 2)
            mu = flux.calculate_shift(tokens, 256, 4096, 0.5, 1.15)
            sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps).tolist(), mu=mu)
            assert ours.numel() == steps + 1 and ours[-1] == 0 and bool((ours[1:] < ours[:-1]).all())
            torch.testing.assert_close(flow_times(ours), sched.sigmas, rtol=2e-6, atol=0)
    model.shift = FlowShift.from_config({**SCHEDULER, "use_karras_sigmas": True})
    with pytest.raises(NodeError, match="use_karras_sigmas=True"):
        FluxSchedule(steps=4).run(model)


def test_float32_latents_at_t_one_are_refused_and_a_larger_gap_runs(dev):
    wf = txt2img(dev)
    wf["nodes"]["latent"]["params"]["dtype"] = "float32"
    with pytest.raises(NodeRunError, match="sample.*float32 at flow time.*set latent.empty's 'dtype' to float64"):
        run(wf, "sample")
    wf["nodes"]["sigmas"]["params"]["gap"] = 1e-3
    (x,) = run(wf, "sample")
    assert x.dtype == torch.float32 and torch.isfinite(x).all()


def test_size_not_a_multiple_of_twice_the_vae_factor_is_a_located_error(dev):
    wf = txt2img(dev)
    wf["nodes"]["latent"]["params"]["width"] = 30  # the VAE's factor 2 divides it; 2x2 packing needs 4
    with pytest.raises(NodeRunError, match="latent.*multiples of 4 \\(the VAE's downscale factor 2 times the model's "
                                           "2x2 latent patches\\)"):
        run(wf, "latent")


def test_guidance_is_refused_by_name_without_a_guidance_embedding(dev, schnell):
    enc = ModelPipeline(path=str(schnell)).run(NodeContext.detached()).text_encoder
    with pytest.raises(NodeError, match="'guidance' does not apply: this Flux transformer has no guidance embedding"):
        TextEncode(prompt=PROMPT, guidance=3.5).run(enc, NodeContext.detached())
    dev_cond = TextEncode(prompt=PROMPT).run(ModelPipeline(path=str(dev)).run(NodeContext.detached()).text_encoder,
                                             NodeContext.detached())
    model = ModelPipeline(path=str(schnell)).run(NodeContext.detached()).model
    with pytest.raises(NodeError, match="has a guidance value, but this transformer's guidance_embeds is false"):
        model.bind(dev_cond)
    with pytest.raises(NodeError, match="'sd' text encoder"):
        model.bind(Conditioning(torch.zeros(1, 8, 32), "sd"))
    with pytest.raises(NodeError, match="'clip_skip' does not apply to Flux"):
        TextEncode(prompt=PROMPT, clip_skip=1).run(enc, NodeContext.detached())
    with pytest.raises(NodeError, match="at most 512 T5 tokens"):
        TextEncode(prompt=PROMPT, max_sequence_length=513).run(enc, NodeContext.detached())


def load_error(path: Path, match: str, **params) -> None:
    with pytest.raises(NodeError, match=match):
        ModelPipeline(path=str(path), **params).run(NodeContext.detached())


def test_missing_text_encoder_2_and_mismatched_components_are_refused(dev, tmp_path):
    root = Path(shutil.copytree(dev, tmp_path / "a"))
    shutil.rmtree(root / "text_encoder_2")
    load_error(root, "missing the 'text_encoder_2/' folder")
    index = json.loads((root / "model_index.json").read_text())
    (root / "model_index.json").write_text(json.dumps({**index, "text_encoder_2": [None, None]}))
    load_error(root, "names no 'text_encoder_2' component; a Flux pipeline needs")
    load_error(dev, "'prediction' is 'eps'.*flow velocity", prediction="eps")
    small = build_flux_pipeline(tmp_path / "b", t5_vocab=100)  # the T5 tokenizer has 292 tokens
    load_error(small, "tokenizer_2' has 292 tokens.*does not belong to this text_encoder")


@pytest.mark.parametrize("path", folder_workflows("flux"), ids=[p.stem for p in folder_workflows("flux")])
def test_flux_workflows_run_through_the_cli(dev, path, tmp_path):
    run_through_cli(path, dev, tmp_path, SIZE)
