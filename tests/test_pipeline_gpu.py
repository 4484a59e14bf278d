"""On a CUDA GPU (marked gpu; skipped without one): every family's tiny pipeline in float32, float16 and bfloat16.

float32 on CUDA against the CPU run, which the family's own tests prove equal to diffusers to float32 precision
(|err| / RMS median < 1e-6): median < 1e-4, 99.9th percentile < 1e-3 (TF32 is off by default for matmuls;
cuDNN convolutions and fused attention still sum in another order). Half precision against the same CPU float32
run: median < 1e-2 and 99.9th percentile < 5e-2 for float16, 5e-2 and 2.5e-1 for bfloat16 (8 mantissa bits)
over a few steps of a random network; and SD 1.x in float16 on CUDA against diffusers' StableDiffusionPipeline
in float16 on CUDA, same latents: median < 1e-2, 99.9th percentile < 5e-2 (diffusers keeps its latents in
float16, ours stay in float32 with only the weights and the network's inputs in float16). The bounds are 4x or
more above what this file reads with "cuda" replaced by "cpu" (half-precision CPU kernels): float16 median
<= 1.3e-3, 99.9th <= 1.1e-2; bfloat16 <= 1.4e-2, <= 6.4e-2; against diffusers float16 1.1e-3, 5.1e-3."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers_pipeline import (FAMILY_SIZES, build_sd_pipeline, family_folder, family_txt2img, quantiles,
                              txt2img_workflow)
from peers import diffusers
from samplegraph import Runtime

pytestmark = pytest.mark.gpu
FAMILIES = ("sd", *sorted(FAMILY_SIZES))
TOLERANCES = {"float32": (1e-4, 1e-3), "float16": (1e-2, 5e-2), "bfloat16": (5e-2, 2.5e-1)}
PROMPTS, SCALE, STEPS = ("a red cat on a mat", "blurry"), 3.0, 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    diffusers()  # skip without the peer
    root = tmp_path_factory.mktemp("gpu_pipelines")
    built = {"sd": build_sd_pipeline(root / "sd")}
    built.update({f: family_folder(f, root / f) for f in FAMILY_SIZES})
    return built


def workflow(family: str, folder: Path, dtype: str) -> dict:
    wf = (txt2img_workflow("txt2img.json", folder, 64, PROMPTS, SCALE, STEPS) if family == "sd"
          else family_txt2img(family, folder))
    wf["nodes"]["pipe"]["params"]["dtype"] = dtype
    return wf


def latents(wf: dict, device: str) -> torch.Tensor:
    """The final latents of one run (float32, on the CPU)."""
    return Runtime(device=device, cache=False).run(wf, outputs=["sample"])["sample"].float().cpu()


@pytest.mark.parametrize("dtype", sorted(TOLERANCES))
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_run_matches_the_cpu_float32_run(folders, family, dtype):
    reference = latents(workflow(family, folders[family], "float32"), "cpu")
    ours = latents(workflow(family, folders[family], dtype), "cuda")
    med, p999 = quantiles(ours, reference)
    print(f"{family} {dtype} on cuda vs cpu float32: median {med:.2e}, 99.9% {p999:.2e}")
    assert torch.isfinite(ours).all() and med < TOLERANCES[dtype][0] and p999 < TOLERANCES[dtype][1], (med, p999)


def test_sd_float16_on_cuda_matches_diffusers_float16_on_cuda(folders):
    d = diffusers()
    wf = workflow("sd", folders["sd"], "float16")
    result = Runtime(device="cuda", cache=False).run(wf, outputs=["latent", "sigmas", "sample"])
    noise = (result["latent"] / result["sigmas"].values[0]).to("cuda", torch.float16)  # diffusers scales by sigma_max
    pipe = d.StableDiffusionPipeline.from_pretrained(folders["sd"], local_files_only=True, use_safetensors=True,
                                                     torch_dtype=torch.float16, safety_checker=None,
                                                     requires_safety_checker=False).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt=PROMPTS[0], negative_prompt=PROMPTS[1], num_inference_steps=STEPS, guidance_scale=SCALE,
               height=64, width=64, latents=noise, output_type="latent").images
    med, p999 = quantiles(result["sample"].float().cpu(), ref.float().cpu())
    print(f"sd float16 on cuda vs diffusers float16 on cuda: median {med:.2e}, 99.9% {p999:.2e}")
    assert med < 1e-2 and p999 < 5e-2, (med, p999)
