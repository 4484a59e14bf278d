"""model.pipeline on a tiny random-weight Stable Diffusion pipeline built offline (tests/helpers_pipeline.py):
the txt2img graph (text.encode -> model.text_condition -> guidance.cfg -> sample -> vae.decode) equals diffusers'
StableDiffusionPipeline.__call__ on the same folder, prompt, negative prompt, initial latents and scheduler
(Euler on the 'normal' schedule vs EulerDiscreteScheduler with linspace spacing; DDIM vs DDIMScheduler), and
img2img equals StableDiffusionImg2ImgPipeline: final latents and decoded images to float32 precision, with CFG batched
or not; every registered sampler.* (with CFG) and guidance.* kind runs (shape, finite, deterministic per seed); bad folders and inputs are located errors; workflows/txt2img.json runs through the CLI."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_pipeline import (assert_parity, build_sd_pipeline, draw_noise_as, img2img_workflow, load_tokenizer,
                              quantiles, run_outputs as run, run_through_cli, txt2img_workflow)
from helpers_workflows import folder_workflows
from peers import diffusers
from samplegraph import Runtime, Workflow
from samplegraph.graph.errors import NodeError, NodeRunError, WorkflowError
from samplegraph.nodes.api import Registry
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.core.denoiser import Denoiser
from samplegraph.nodes.core.model import Model
from samplegraph.nodes.core.sampler import Sampler
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.pipelines.pipeline import ModelPipeline
from samplegraph.nodes.pipelines.text_encode import TextEncode
from samplegraph.nodes.pipelines.types import EncodeOptions

SIZE, STEPS, SCALE = 64, 4, 3.0  # 64x64 images: 8x8 latents through the VAE's factor 8
PROMPT, NEGATIVE = "a red cat on a mat", "blurry"


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    diffusers()  # skip without the peer
    return build_sd_pipeline(tmp_path_factory.mktemp("tiny_sd"))


def txt2img(path: Path, sampler: str = "sampler.euler", steps: int = STEPS, scale: float = SCALE,
            batch: int = 1, seed: int = 0, **sampler_params) -> dict:
    wf = txt2img_workflow("txt2img.json", path, SIZE, (PROMPT, NEGATIVE), scale, steps, batch, seed)
    wf["nodes"]["solver"] = {"kind": sampler, "params": sampler_params}
    return wf


def diffusers_pipe(path: Path, scheduler: str):
    d = diffusers()
    pipe = d.StableDiffusionPipeline.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                     safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = getattr(d, scheduler).from_config(pipe.scheduler.config, **(
        {"clip_sample": False, "set_alpha_to_one": True} if scheduler == "DDIMScheduler" else {}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("batch", [True, False], ids=["cfg_batched", "cfg_separate"])
@pytest.mark.parametrize("sampler, scheduler, timestep", [("sampler.euler", "EulerDiscreteScheduler", "continuous"),
                                                         ("sampler.ddim", "DDIMScheduler", "rounded")])
def test_txt2img_equals_diffusers_pipeline(sd, sampler, scheduler, timestep, batch):
    """CFG batched (one UNet call on [negative; prompt], as diffusers makes it) or as two calls: both agree."""
    wf = txt2img(sd, sampler, steps=STEPS)
    wf["nodes"]["pipe"]["params"]["timestep"] = timestep
    wf["nodes"]["guided"]["params"]["batch"] = batch
    if scheduler == "DDIMScheduler":  # DDIM's own grid: 'leading' timesteps with steps_offset 1 (below)
        wf["nodes"]["sigmas"] = {"kind": "schedule.ddim_uniform", "inputs": {"model": "cond"},
                                 "params": {"steps": STEPS}}
    latent0, sigmas, final, images = run(wf, "latent", "sigmas", "sample", "decode")
    pipe = diffusers_pipe(sd, scheduler)
    if scheduler == "DDIMScheduler":
        pipe.scheduler.register_to_config(timestep_spacing="leading", steps_offset=1)
    pipe.scheduler.set_timesteps(STEPS)
    ref_sigmas = ref_sigma_grid(pipe.scheduler)
    assert torch.allclose(sigmas.values.float(), ref_sigmas, rtol=1e-5, atol=1e-6), (sigmas.values, ref_sigmas)
    noise = latent0 / sigmas.values[0]  # diffusers multiplies by init_noise_sigma (Euler: sigma_max; DDIM: 1)
    if scheduler == "DDIMScheduler":
        noise = latent0 / (1 + sigmas.values[0] ** 2).sqrt()  # DDIM starts in VP space: x_vp = x / sqrt(1 + s^2)
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=SCALE,
                height=SIZE, width=SIZE)
    ref_latent = pipe(latents=noise.float().clone(), output_type="latent", **call).images
    ref_images = pipe(latents=noise.float().clone(), output_type="pt", **call).images
    med, p999 = quantiles(final, ref_latent)
    print(f"{sampler} batch={batch}: latents median {med:.2e}, 99.9% {p999:.2e}", end="; ")
    assert med < 1e-6 and p999 < 1e-5, (med, p999)
    med, p999 = quantiles(images, ref_images)
    print(f"images median {med:.2e}, 99.9% {p999:.2e}")
    assert med < 1e-6 and p999 < 1e-5, (med, p999)
    assert final.abs().max() > 0.1 and images.std() > 1e-3  # not a trivially equal pair


def test_img2img_equals_diffusers_img2img_pipeline(sd, tmp_path, monkeypatch):
    """load_image -> vae.encode -> denoise_strength -> latent.add_noise -> sample equals
    StableDiffusionImg2ImgPipeline given our encoded latents as its image and our noise as its draw."""
    d = diffusers()
    wf = img2img_workflow("img2img.json", sd, tmp_path, SIZE, (PROMPT, NEGATIVE), SCALE, STEPS, 0.5)
    encoded, noised, sigmas, final, images = run(wf, "encode", "noised", "sigmas", "sample", "decode")
    assert sigmas.steps == 2 and encoded.shape == (1, 4, 8, 8)
    draw_noise_as(monkeypatch, d.StableDiffusionImg2ImgPipeline, ((noised - encoded) / sigmas.values[0]).float())
    pipe = d.StableDiffusionImg2ImgPipeline(**diffusers_pipe(sd, "EulerDiscreteScheduler").components)
    pipe.set_progress_bar_config(disable=True)
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, image=encoded.clone(), strength=0.5,
                num_inference_steps=STEPS, guidance_scale=SCALE)
    assert_parity("img2img", [("latents", final, pipe(output_type="latent", **call).images),
                              ("images", images, pipe(output_type="pt", **call).images)])


def ref_sigma_grid(sched) -> torch.Tensor:
    """The VE sigmas of a diffusers scheduler's timesteps, ending in 0."""
    if hasattr(sched, "sigmas"):
        return sched.sigmas.float()
    ac = sched.alphas_cumprod[sched.timesteps.long()].double()
    return torch.cat([((1 - ac) / ac).sqrt(), torch.zeros(1, dtype=torch.float64)]).float()


def test_cfg_scale_is_diffusers_guidance_scale_and_scale_one_is_the_prompt_alone(sd):
    """guidance_scale w: eps_u + w (eps_c - eps_u); at w = 1 the uncond branch drops out exactly."""
    (guided_one,) = run(txt2img(sd, scale=1.0), "sample")
    wf = txt2img(sd)
    wf["nodes"]["sample"]["inputs"]["denoise"] = "cond"
    (cond_only,) = run(wf, "sample")
    # float32 rounding only: a batched (uncond, cond) pass rounds apart from a single one on more than one thread
    # (1e-5 on outputs of 50 there); the tolerance scales with the output
    assert torch.allclose(guided_one, cond_only, atol=1e-6 * float(cond_only.abs().max()))


def test_clip_skip_is_the_encoder_cut_after_layer_minus_k_plus_1(sd):
    """clip_skip k equals a CLIPTextModel of the first L - k layers (same weights); 0 equals diffusers' encode_prompt.

    (diffusers 0.42's own clip_skip path reads `text_encoder.text_model`, which transformers 5 removed.)"""
    from transformers import CLIPTextModel
    pipe = diffusers_pipe(sd, "EulerDiscreteScheduler")
    enc = ModelPipeline(path=str(sd)).run(NodeContext.detached()).text_encoder
    ids = load_tokenizer(sd)([PROMPT], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.allclose(enc.encode([PROMPT], EncodeOptions())[0].embeddings, pipe.encode_prompt(PROMPT, "cpu", 1, False)[0],
                          atol=1e-6)
    full = pipe.text_encoder
    for skip in (1, 2):
        keep = full.config.num_hidden_layers - skip
        cut = CLIPTextModel(type(full.config)(**{**full.config.to_dict(), "num_hidden_layers": keep})).eval()
        state = {k: v for k, v in full.state_dict().items()
                 if not any(f"layers.{i}." in k for i in range(keep, keep + skip))}
        cut.load_state_dict(state, strict=True)
        with torch.no_grad():
            ref = cut(ids)[0]  # (1, 77, D)
        assert torch.allclose(enc.encode([PROMPT], EncodeOptions(clip_skip=skip))[0].embeddings, ref, atol=1e-6), skip
    with pytest.raises(NodeError, match="clip_skip"):
        enc.encode([PROMPT], EncodeOptions(clip_skip=3))


def test_long_prompt_is_truncated_with_a_warning_event(sd):
    wf = txt2img(sd)
    wf["nodes"]["prompt"]["params"]["prompt"] = "word " * 60  # 300 characters: far past 77 tokens
    events = []
    result = Runtime(device="cpu").run(wf, outputs=["prompt"], on_event=events.append)
    warnings = [e for e in events if type(e).__name__ == "NodeWarning"]
    assert len(warnings) == 1 and warnings[0].node == "prompt" and "truncated" in warnings[0].message
    assert result["prompt"].embeddings.shape[1] == 77
    tok = load_tokenizer(sd)
    assert warnings[0].message.endswith(repr(tok.decode(tok("word " * 60).input_ids[76:-1])))


# The smoke test covers every registered sampler.* and guidance.* kind, derived from the registry: a sampler with
# CFG, a guidance node with Euler. A node's required inputs come from the txt2img graph by port type (a sampler
# node's Denoiser is the guided one; a guidance node's are cond / uncond by port name; a value that another
# sampler.* node makes, such as calibration ratios, from that node); a node that needs what the pipeline
# cannot give (a class-labelled model, a classifier, a weak model, data samples) is skipped with the reason in
# its id. A kind whose output no sampler takes here is a failure, so a new node is covered or noticed.
SPECS = Registry.default().specs
SMOKE_PARAMS = {  # required parameters (8x8 latents of 4 channels), and small budgets for the calibrating nodes
    "sampler.plan": {"switch_at": [1]},
    "sampler.iia_fit": {"shape": [4, 8, 8], "particles": 4, "fine_steps": 4},
    "sampler.plan_search": {"shape": [4, 8, 8], "particles": 2, "nfe": 4, "rounds": 1, "reference_steps": 8,
                            "sigma_min": 0.03, "sigma_max": 14.6},
    "sampler.dc_solver_calibrate": {"substeps": 4},
    "guidance.coarse": {"target": [0.0] * 64, "factor": 2},
}
SMOKE_INNER = {"sampler.dc_solver_calibrate": "sampler.dc_solver"}  # the sampler a node calibrates (else Euler)
GUIDANCE_MODELS = {"cond": "cond", "denoise": "cond", "model": "cond", "uncond": "uncond", "other": "uncond"}


class Unavailable(Exception):
    """A node input that the tiny txt2img graph cannot give."""


def node_id(kind: str) -> str:
    return kind.replace(".", "_")


def smoke_node(kind: str, nodes: dict, guidance: bool = False) -> dict:
    """The node spec of `kind`, its required inputs wired into `nodes` (which gains their producers)."""
    inputs = {p.name: smoke_source(kind, p, nodes, guidance) for p in SPECS[kind].inputs if p.required}
    return {"kind": kind, "inputs": inputs, "params": SMOKE_PARAMS.get(kind, {})}


def smoke_source(owner: str, port, nodes: dict, guidance: bool):
    """The link that feeds `owner`'s `port`, adding the nodes it needs."""
    t = port.type
    if issubclass(t, Sampler):
        kinds = ["sampler.euler", "sampler.dpmpp_2m"] if port.many else [SMOKE_INNER.get(owner, "sampler.euler")]
        nodes.update({node_id(k): {"kind": k} for k in kinds})
        return [node_id(k) for k in kinds] if port.many else node_id(kinds[0])
    if t is Sigmas or (t is torch.Tensor and port.name == "latent"):
        return port.name
    if issubclass(Denoiser, t) or issubclass(t, Denoiser):
        if not guidance:
            return "guided"
        if port.name not in GUIDANCE_MODELS or not issubclass(Model, t):
            raise Unavailable(f"a {port.name!r} {t.__name__}")
        return GUIDANCE_MODELS[port.name]
    made = [k for k, spec in sorted(SPECS.items()) if k.startswith("sampler.") and any(o.type is t for o in spec.outputs)
            and not any(p.type is t for p in spec.inputs)]
    if not made:
        raise Unavailable(f"{port.name!r} ({t.__name__})")
    outputs = SPECS[made[0]].outputs
    nodes[node_id(made[0])] = smoke_node(made[0], nodes)
    link = node_id(made[0]) if len(outputs) == 1 else f"{node_id(made[0])}.{next(o.name for o in outputs if o.type is t)}"
    return [link] if port.many else link


def regression_case(kind: str) -> dict:
    """dc_solver_regression fits ratios calibrated at several step counts (its minimum: 3 counts, 9 searched steps)."""
    nodes = {"sampler_dc_solver": {"kind": "sampler.dc_solver"}}
    for steps in (4, 5, 6):
        nodes[f"sigmas_{steps}"] = {"kind": "schedule.normal", "inputs": {"model": "cond"}, "params": {"steps": steps}}
        nodes[f"calibrate_{steps}"] = {"kind": "sampler.dc_solver_calibrate", "params": {"substeps": 2},
                                       "inputs": {"denoise": "guided", "sigmas": f"sigmas_{steps}", "latent": "latent",
                                                  "sampler": "sampler_dc_solver"}}
    nodes[node_id(kind)] = {"kind": kind, "inputs": {"calibrations": [f"calibrate_{k}" for k in (4, 5, 6)],
                                                     "sigmas": "sigmas"}}
    nodes["solver"] = {"kind": "sampler.dc_solver", "inputs": {"calibration": node_id(kind)}}
    return nodes


SMOKE_CASES = {"sampler.dc_solver_regression": regression_case}  # wirings the port types alone do not give
SLOW_SMOKE = {"sampler.dc_solver_regression"}  # three calibrations: ~10 CPU-s


def sampler_case(kind: str) -> dict:
    """The extra nodes that sample with `kind` (or with the sampler that takes what `kind` makes)."""
    if kind in SMOKE_CASES:
        return SMOKE_CASES[kind](kind)
    nodes: dict = {}
    outputs = SPECS[kind].outputs
    if any(issubclass(o.type, Sampler) for o in outputs):
        nodes["solver"] = smoke_node(kind, nodes)
        return nodes
    for out in outputs:
        users = [(k, p) for k, spec in sorted(SPECS.items()) if k.startswith("sampler.") for p in spec.inputs
                 if p.type is out.type and any(issubclass(o.type, Sampler) for o in spec.outputs)]
        if users:
            user, port = users[0]
            nodes[node_id(kind)] = smoke_node(kind, nodes)
            solver = smoke_node(user, nodes)
            link = node_id(kind) if len(outputs) == 1 else f"{node_id(kind)}.{out.name}"
            solver["inputs"][port.name] = [link] if port.many else link
            nodes["solver"] = solver
            return nodes
    raise AssertionError(f"{kind}'s outputs feed no sampler.* node: teach the smoke test how to use it")


def guidance_case(kind: str) -> dict:
    nodes: dict = {}
    nodes["guided"] = smoke_node(kind, nodes, guidance=True)
    return nodes


def smoke_cases(prefix: str, build) -> list:
    cases = []
    for kind in sorted(k for k in SPECS if k.startswith(prefix)):
        try:
            cases.append(pytest.param(build(kind), id=kind, marks=[pytest.mark.slow] if kind in SLOW_SMOKE else []))
        except Unavailable as e:
            reason = f"needs {e}, which the txt2img pipeline cannot give"
            cases.append(pytest.param(None, id=f"{kind} (skipped: {reason})", marks=pytest.mark.skip(reason=reason)))
    return cases


def smoke(sd: Path, nodes: dict) -> None:
    """2 steps on 2 latents of 8x8: the decoded images' shape, finite, equal per seed, different across seeds."""
    def decode(seed: int) -> torch.Tensor:
        wf = txt2img(sd, steps=2, batch=2, seed=seed)
        wf["nodes"].update(json.loads(json.dumps(nodes)))
        (images,) = run(wf, "decode")
        return images

    a, b, c = decode(0), decode(0), decode(1)
    assert a.shape == (2, 3, SIZE, SIZE) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("nodes", smoke_cases("sampler.", sampler_case))
def test_every_solver_with_cfg_runs_on_the_tiny_pipeline(sd, nodes):
    smoke(sd, nodes)


@pytest.mark.parametrize("nodes", smoke_cases("guidance.", guidance_case))
def test_every_guidance_node_runs_on_the_tiny_pipeline(sd, nodes):
    smoke(sd, nodes)


def test_vae_encode_decode_round_trip_and_scaling(sd):
    pipe = ModelPipeline(path=str(sd)).run(NodeContext.detached())
    ref = diffusers().AutoencoderKL.from_pretrained(sd / "vae", local_files_only=True)
    images = torch.rand(2, 3, SIZE, SIZE)
    latents = pipe.vae.encode(images)  # (2, 4, 8, 8)
    expect = ref.encode(images * 2 - 1).latent_dist.mode() * ref.config.scaling_factor
    assert latents.shape == (2, 4, 8, 8) and torch.allclose(latents, expect, atol=1e-6)
    decoded = pipe.vae.decode(latents)
    expect = (ref.decode(latents / ref.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(decoded, expect, atol=1e-6)


def test_save_image_embeds_the_workflow_and_load_image_reads_it_back(sd, tmp_path):
    wf = txt2img(sd, steps=2, batch=3)
    result = Runtime(device="cpu").run(wf, outputs=["save", "decode"], out_dir=tmp_path)
    with Image.open(result["save"]) as png:
        assert png.size == (3 * SIZE, SIZE)  # a grid of 3 in one row (columns 4)
        assert json.loads(png.text["workflow"]) == Workflow.from_dict(wf).model_dump(mode="json")
        assert png.text["seed"] == "0"
        pixels = np.asarray(png.convert("RGB"))
    expect = (result["decode"].permute(0, 2, 3, 1) * 255).round().to(torch.uint8)  # (3, H, W, 3)
    assert np.array_equal(pixels[:, :SIZE], expect[0].numpy())
    load = {"version": 1, "nodes": {"img": {"kind": "io.load_image", "params": {"path": result["save"]}}},
            "outputs": ["img"]}
    loaded = Runtime(device="cpu").run(load)["img"]
    assert loaded.shape == (1, 3, SIZE, 3 * SIZE) and torch.equal(loaded[0, :, :, :SIZE] * 255,
                                                                   expect[0].permute(2, 0, 1).float())


def test_conditioning_round_trips_through_the_disk_cache(sd, tmp_path):
    wf = txt2img(sd, steps=2)
    first, second = (Runtime(device="cpu", cache_dir=tmp_path).run(wf, outputs=["prompt", "sample"])
                     for _ in range(2))
    assert {n.node: n.cache for n in second.report.nodes}["prompt"] == "disk"
    assert torch.equal(first["prompt"].embeddings, second["prompt"].embeddings)
    assert torch.equal(first["sample"], second["sample"])


def test_conditioning_of_another_width_or_family_is_refused_when_bound(sd):
    from samplegraph.nodes.pipelines.types import Conditioning
    model = ModelPipeline(path=str(sd)).run(NodeContext.detached()).model
    with pytest.raises(NodeError, match="cross_attention_dim is 16"):
        model.bind(Conditioning(torch.zeros(1, 77, 32), "sd"))
    with pytest.raises(NodeError, match="'sdxl' text encoder"):
        model.bind(Conditioning(torch.zeros(1, 77, 16), "sdxl"))


def test_a_png_without_a_workflow_and_an_unreadable_image_are_located_errors(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(WorkflowError, match="no 'workflow' text chunk"):
        Workflow.load(plain)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    load = {"version": 1, "nodes": {"img": {"kind": "io.load_image", "params": {"path": str(tmp_path / "bad.png")}}},
            "outputs": ["img"]}
    with pytest.raises(NodeRunError, match="img.*cannot read"):
        Runtime(device="cpu").run(load)


def load_error(path: Path, match: str) -> None:
    with pytest.raises(NodeError, match=match):
        ModelPipeline(path=str(path)).run(NodeContext.detached())


def copy_of(sd: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sd, tmp_path / "copy"))


def test_missing_component_and_pickle_only_folder_are_refused(sd, tmp_path):
    root = copy_of(sd, tmp_path)
    shutil.rmtree(root / "vae")
    load_error(root, "missing the 'vae/' folder")
    root = copy_of(sd, tmp_path / "b")
    (root / "unet" / "diffusion_pytorch_model.safetensors").rename(root / "unet" / "diffusion_pytorch_model.bin")
    load_error(root, "pickle checkpoint.*never unpickles")  # refused by name: the file is not a pickle at all


def test_other_families_are_named_as_not_yet_supported(sd, tmp_path):
    root = copy_of(sd, tmp_path)
    for kind, family in [("StableDiffusionXLInpaintPipeline", "SDXL inpainting"), ("FluxFillPipeline", "Flux Fill")]:
        index = json.loads((root / "model_index.json").read_text())
        (root / "model_index.json").write_text(json.dumps({**index, "_class_name": kind}))
        load_error(root, f"{family}.*not support.*yet")


def test_an_encode_option_of_another_family_is_refused_by_name(sd):
    enc = ModelPipeline(path=str(sd)).run(NodeContext.detached()).text_encoder
    for name, value in [("guidance", 3.5), ("original_size", (64, 64)), ("max_sequence_length", 8),
                        ("prompt_2", "an oil painting"), ("prompt_3", "an oil painting")]:
        with pytest.raises(NodeError, match=f"'{name}' does not apply to a 'sd' text encoder"):
            TextEncode(prompt=PROMPT, **{name: value}).run(enc, NodeContext.detached())


def test_tokenizer_that_does_not_match_the_encoder_is_refused(tmp_path):
    diffusers()
    root = build_sd_pipeline(tmp_path / "small", vocab_size=100)  # the tokenizer has ~190 tokens
    load_error(root, "tokenizer does not belong to this text_encoder")


def test_width_not_divisible_by_the_vae_factor_is_a_located_error(sd):
    wf = txt2img(sd)
    wf["nodes"]["latent"]["params"]["width"] = 60
    with pytest.raises(NodeRunError, match="latent.*multiples of the VAE's downscale factor 8"):
        run(wf, "latent")


@pytest.mark.parametrize("path", folder_workflows("sd"), ids=[p.stem for p in folder_workflows("sd")])
def test_pipeline_workflows_run_through_the_cli(sd, path, tmp_path):
    run_through_cli(path, sd, tmp_path, SIZE)


def test_per_component_dtypes_and_an_unknown_component_is_refused(sd):
    pipe = ModelPipeline(path=str(sd), dtypes={"vae": "bfloat16"}).run(NodeContext.detached())
    assert next(pipe.vae.vae.parameters()).dtype == torch.bfloat16
    assert next(pipe.text_encoder.encoder.parameters()).dtype == torch.float32
    with pytest.raises(NodeError, match="'dtypes' names transformer"):
        ModelPipeline(path=str(sd), dtypes={"transformer": "float16"}).run(NodeContext.detached())
