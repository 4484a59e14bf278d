"""A tiny random-weight Stable Diffusion pipeline folder built offline from small configs (the shapes of
diffusers' own StableDiffusionPipeline fast tests), with a CLIP tokenizer whose vocabulary is written here:
single characters (each also with the word-end mark '</w>') and no merges, so no hub download is needed."""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch

CONTEXT = 77  # CLIP's context, as in SD 1.x/2.x
UNET = dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=16, norm_num_groups=4, attention_head_dim=4)
VAE = dict(block_out_channels=(4, 4, 4, 4), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 prediction_type="epsilon", timestep_spacing="linspace", steps_offset=1)


def tiny_vocab() -> dict[str, int]:
    """CLIP's special tokens first (ids 0-2), then every printable character alone and at a word's end."""
    chars = [c for c in string.printable if not c.isspace()]
    tokens = ["<|startoftext|>", "<|endoftext|>", "!"] + [c for c in chars if c != "!"] + [c + "</w>" for c in chars]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def save_tokenizer(folder: Path, vocab: dict[str, int] | None = None) -> int:
    """A CLIPTokenizer (vocab.json, merges.txt; `vocab` or tiny_vocab()) in `folder`; returns its vocabulary size."""
    from transformers import CLIPTokenizer
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocab or tiny_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=CONTEXT,
                        pad_token="<|endoftext|>")
    tok.save_pretrained(folder)
    return len(tok)


TEXT = dict(hidden_size=16, intermediate_size=37, num_attention_heads=2, num_hidden_layers=3, projection_dim=16)


def build_sd_pipeline(root: Path, seed: int = 0, vocab_size: int | None = None,
                      scheduler: str = "EulerDiscreteScheduler", unet: dict | None = None,
                      text: dict | None = None) -> Path:
    """Save a tiny SD pipeline (unet, text_encoder, tokenizer, vae, scheduler; safetensors) under `root`;
    `unet` / `text` replace entries of the UNET / TEXT configs (a larger pipeline for benchmarks/pipeline.py)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel
    size = save_tokenizer(root / "tokenizer")
    torch.manual_seed(seed)
    unet_net = diffusers.UNet2DConditionModel(**{**UNET, **(unet or {})}).eval()
    vae = diffusers.AutoencoderKL(**VAE).eval()
    text_net = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size or size, max_position_embeddings=CONTEXT,
                                            bos_token_id=0, eos_token_id=1, pad_token_id=1,
                                            **{**TEXT, **(text or {})})).eval()
    sched = getattr(diffusers, scheduler)(**SCHEDULER)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text_net, tokenizer=load_tokenizer(root),
                                             unet=unet_net, scheduler=sched, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root, safe_serialization=True)
    return root


def load_tokenizer(root: Path, name: str = "tokenizer"):
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(root / name, local_files_only=True)


def save_t5_tokenizer(folder: Path, max_length: int = 32) -> int:
    """A T5 tokenizer (tokenizer.json: a Unigram over single characters with the word-start mark, '</s>' appended)
    in `folder`, as SD3's and Flux's tokenizer_3 / tokenizer_2; returns its size (with T5's 100 extra ids)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5TokenizerFast
    chars = [c for c in string.printable if not c.isspace()]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in chars] + [("\u2581" + c, -1.5) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    t5 = T5TokenizerFast.from_pretrained(folder, local_files_only=True)
    t5.save_pretrained(folder)
    return len(t5)


def quantiles(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Median and 99.9th percentile of |a - b| relative to b's RMS (a random network's latents reach ~30)."""
    err = (a.double() - b.double()).abs().flatten() / b.double().square().mean().sqrt()
    return float(err.median()), float(err.quantile(0.999))


def cli_overrides(path: Path, pipeline: Path | dict[str, Path], tmp_path: Path, size: int) -> list[str]:
    """--set arguments that point a shipped pipeline workflow at a tiny pipeline (a dict: each model.pipeline node's,
    by node name), small (size x size) and short."""
    import numpy as np
    from PIL import Image
    sets = []
    for name, spec in json.loads(path.read_text())["nodes"].items():
        kind = spec["kind"]
        if kind == "model.pipeline":
            sets.append(f"{name}.path={pipeline[name] if isinstance(pipeline, dict) else pipeline}")
        elif kind in ("latent.empty", "schedule.flux"):  # schedule.flux shifts by the image's size
            sets += [f"{name}.width={size}", f"{name}.height={size}"]
        elif kind == "io.load_image":
            image = tmp_path / "input.png"
            Image.fromarray(np.full((size, size, 3), 128, dtype=np.uint8)).save(image)
            sets.append(f"{name}.path={image}")
        elif kind == "io.load_mask":
            mask = tmp_path / "mask.png"
            left = np.where(np.arange(size) < size // 2, 255, 0).astype(np.uint8)  # (W,)
            Image.fromarray(np.tile(left, (size, 1))).save(mask)
            sets.append(f"{name}.path={mask}")  # the left half repainted
        elif kind.startswith("schedule.") and "steps" in spec.get("params", {}):
            sets.append(f"{name}.steps=2")
    return [a for s in sets for a in ("--set", s)]


def run_through_cli(path: Path, pipeline: Path | dict[str, Path], tmp_path: Path, size: int) -> None:
    """`samplegraph run` of a shipped pipeline workflow on a tiny pipeline (or one per model.pipeline node: a dict
    by node name): a size x size PNG carrying the workflow, and `samplegraph run image.png` re-makes the same
    pixels."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from samplegraph import Runtime
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "samplegraph.runtime.cli", "run", str(path), "--out", str(out),
                           "--no-cache", "--device", "cpu", "--threads", "1", "--quiet",
                           *cli_overrides(path, pipeline, tmp_path, size)], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["status"] == "ok"
    image = next(out.glob("*.png"))
    with Image.open(image) as png:
        paths = {name: n["params"]["path"] for name, n in json.loads(png.text["workflow"])["nodes"].items()
                 if n["kind"] == "model.pipeline"}
        assert png.size == (size, size)
        assert paths == ({k: str(v) for k, v in pipeline.items()} if isinstance(pipeline, dict)
                         else dict.fromkeys(paths, str(pipeline)))
        pixels = np.asarray(png)
    again = tmp_path / "again"  # `samplegraph run image.png` (Runtime.run on the PNG) re-runs its workflow
    Runtime(device="cpu").run(image, out_dir=again)
    with Image.open(again / image.name) as png:
        assert np.array_equal(np.asarray(png), pixels)


def assert_parity(label: str, pairs: list[tuple[str, torch.Tensor, torch.Tensor]]) -> None:
    """Each (what, ours, reference) agrees to float32 precision: |err| / RMS median < 1e-6, 99.9th pct < 1e-5."""
    for what, ours, ref in pairs:
        med, p999 = quantiles(ours, ref)
        print(f"{label} {what}: median {med:.2e}, 99.9% {p999:.2e}")
        assert med < 1e-6 and p999 < 1e-5, (label, what, med, p999)


def img2img_workflow(name: str, pipeline: Path, tmp_path: Path, size: int | tuple[int, int], prompts: tuple[str, str],
                     scale: float, steps: int, strength: float) -> dict:
    """workflows/<name> (an img2img workflow) on `pipeline` and a random PNG of `size` ((height, width); an int:
    square), with these prompt and negative prompt, CFG scale, full steps and strength."""
    import numpy as np
    from PIL import Image
    source = tmp_path / "input.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*((size, size) if isinstance(size, int) else size), 3),
                                                              dtype=np.uint8)).save(source)
    wf = json.loads((Path(__file__).resolve().parents[1] / "workflows" / name).read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"], n["image"]["params"]["path"] = str(pipeline), str(source)
    n["prompt"]["params"]["prompt"], n["negative"]["params"]["prompt"] = prompts
    n["guided"]["params"]["scale"], n["full"]["params"]["steps"] = scale, steps
    n["sigmas"]["params"]["strength"] = strength
    return wf


def draw_noise_as(monkeypatch, pipeline_class: type, eps: torch.Tensor) -> None:
    """Make a diffusers img2img pipeline's noise draw (randn_tensor in its module) return `eps`."""
    import sys
    monkeypatch.setattr(sys.modules[pipeline_class.__module__], "randn_tensor", lambda shape, **kw: eps.clone())


def txt2img_workflow(name: str, pipeline: Path, size: int, prompts: tuple[str, str], scale: float, steps: int,
                     batch: int = 1, seed: int = 0) -> dict:
    """workflows/<name> (a txt2img workflow) on `pipeline`: these prompt and negative prompt, CFG scale, steps,
    size x size images, batch and seed."""
    wf = json.loads((Path(__file__).resolve().parents[1] / "workflows" / name).read_text())
    n = wf["nodes"]
    n["pipe"]["params"]["path"] = str(pipeline)
    n["prompt"]["params"]["prompt"], n["negative"]["params"]["prompt"] = prompts
    n["guided"]["params"]["scale"] = scale
    n["sigmas"]["params"]["steps"] = steps
    n["latent"]["params"].update(width=size, height=size, batch=batch)
    wf["seed"] = seed
    return wf


def run_outputs(wf: dict, *outputs: str) -> list:
    """The named outputs of one CPU run of `wf`."""
    from samplegraph import Runtime
    result = Runtime(device="cpu").run(wf, outputs=list(outputs))
    return [result[o] for o in outputs]


FAMILY_SIZES = {"sdxl": 64, "sd3": 64, "flux": 32}  # sides their tiny pipelines' tests use


def family_folder(family: str, root: Path) -> Path:
    """A tiny random pipeline folder of `family` (sdxl, sd3, flux) under root, built by its tests' builder."""
    from peers import diffusers
    diffusers()  # skip without the peer
    if family == "sdxl":
        from helpers_pipeline_sdxl import build_sdxl_pipeline
        return build_sdxl_pipeline(root)
    if family == "sd3":
        from helpers_pipeline_sd3 import build_sd3_pipeline
        return build_sd3_pipeline(root)
    from helpers_pipeline_flux import build_flux_pipeline
    return build_flux_pipeline(root)


def family_txt2img(family: str, folder: Path) -> dict:
    """workflows/txt2img_<family>.json on the tiny folder: its sides as the family's tests, 2 steps."""
    wf = json.loads((Path(__file__).resolve().parents[1] / "workflows" / f"txt2img_{family}.json").read_text())
    for spec in wf["nodes"].values():
        params = spec.setdefault("params", {})
        if spec["kind"] == "model.pipeline":
            params["path"] = str(folder)
        if spec["kind"] in ("latent.empty", "schedule.flux"):
            params.update(width=FAMILY_SIZES[family], height=FAMILY_SIZES[family])
        if spec["kind"].startswith("schedule.") and "steps" in params:
            params["steps"] = 2
    return wf
