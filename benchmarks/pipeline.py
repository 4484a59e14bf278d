"""Seconds per image and peak memory: samplegraph (Runtime on workflows/txt2img.json) against diffusers'
StableDiffusionPipeline.__call__ on the same small random-weight SD pipeline, same prompt, negative prompt,
initial latents, steps and CFG scale (Euler on schedule.normal = EulerDiscreteScheduler), CFG batched (one UNet
call per step, as diffusers makes it) and separate (two calls).

    python benchmarks/pipeline.py [--size 512] [--steps 10] [--repeat 5] [--threads 1] [--device cpu]

Timing: the three variants run interleaved in one process (each repeat: diffusers, batched, separate), after one
warm-up call each; every call encodes a fresh prompt pair (ours would otherwise take the encodings from its
cache), decodes the latents, and returns images as tensors (diffusers: output_type="pt"; ours: vae.decode's
output); the pipeline folder is loaded once (model.pipeline stays in the Runtime's memory cache). The first
repeat checks that both give the same images. Memory: each variant in its own process, after a warm-up call;
CPU: the peak RSS during one call (VmHWM reset through /proc/self/clear_refs) and its rise over the RSS before
the call; CUDA: torch.cuda.max_memory_allocated over the call."""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# "small but not tiny": SD's UNet layout (2 resolutions, cross-attention) at 32/64 channels; 64x64 latents
UNET = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=64, cross_attention_dim=32,
            norm_num_groups=8, attention_head_dim=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, projection_dim=32)
PROMPT, NEGATIVE, SCALE = "a photograph of an astronaut riding a horse", "blurry, low quality", 7.5
VARIANTS = ("diffusers", "samplegraph batched", "samplegraph separate")


def build(folder: Path) -> Path:
    from helpers_pipeline import build_sd_pipeline
    return build_sd_pipeline(folder, unet=UNET, text=TEXT)


class Ours:
    """samplegraph's txt2img workflow on the folder; `batch` is guidance.cfg's."""

    def __init__(self, folder: Path, args: argparse.Namespace, batch: bool):
        from samplegraph import Runtime
        self.runtime = Runtime(device=args.device)
        self.wf = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
        n = self.wf["nodes"]
        n["pipe"]["params"]["path"] = str(folder)
        n["guided"]["params"].update(scale=SCALE, batch=batch)
        n["sigmas"]["params"]["steps"] = args.steps
        n["latent"]["params"].update(width=args.size, height=args.size, batch=1)

    def __call__(self, i: int) -> torch.Tensor:
        n = self.wf["nodes"]
        n["prompt"]["params"]["prompt"], n["negative"]["params"]["prompt"] = f"{PROMPT} {i}", f"{NEGATIVE} {i}"
        return self.runtime.run(self.wf, outputs=["decode"])["decode"]  # (1, 3, H, W) in [0, 1]

    def noise(self) -> torch.Tensor:
        """The unit-variance initial noise of the workflow's latent (diffusers scales it by sigma_max itself)."""
        result = self.runtime.run(self.wf, outputs=["latent", "sigmas"])
        return (result["latent"] / result["sigmas"].values[0]).float()


class Diffusers:
    """StableDiffusionPipeline.__call__ on the folder with EulerDiscreteScheduler (the folder's scheduler)."""

    def __init__(self, folder: Path, args: argparse.Namespace, noise: torch.Tensor):
        import diffusers
        self.pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, safety_checker=None,
            requires_safety_checker=False).to(args.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.args, self.noise = args, noise.to(args.device)

    def __call__(self, i: int) -> torch.Tensor:
        a = self.args
        return self.pipe(prompt=f"{PROMPT} {i}", negative_prompt=f"{NEGATIVE} {i}", latents=self.noise.clone(),
                         num_inference_steps=a.steps, guidance_scale=SCALE, height=a.size, width=a.size,
                         output_type="pt").images  # (1, 3, H, W) in [0, 1]


def make(variant: str, folder: Path, args: argparse.Namespace):
    if variant == "diffusers":
        from safetensors.torch import load_file
        return Diffusers(folder, args, load_file(args.noise)["noise"])
    return Ours(folder, args, variant.endswith("batched"))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(call, i: int, device: str) -> tuple[float, torch.Tensor]:
    sync(device)
    start = time.perf_counter()
    out = call(i)
    sync(device)
    return time.perf_counter() - start, out


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_child(variant: str, folder: Path, args: argparse.Namespace) -> None:
    """Print {"peak_mib", "rise_mib"} of one call of `variant` after a warm-up call (run in its own process)."""
    torch.set_num_threads(args.threads)
    call = make(variant, folder, args)
    call(0)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call(1)
        peak = torch.cuda.max_memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = rss_kib("VmRSS") * 1024
        call(1)
        peak = rss_kib("VmHWM") * 1024
    print(json.dumps({"peak_mib": peak / 2 ** 20, "rise_mib": (peak - base) / 2 ** 20}))


def memory(variant: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--memory-child", variant, "--folder", str(folder), "--noise", str(args.noise),
           "--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(folder: Path, args: argparse.Namespace) -> str:
    from safetensors.torch import save_file
    ours = Ours(folder, args, True)
    save_file({"noise": ours.noise().cpu().contiguous()}, args.noise)  # diffusers starts from our latent
    calls = {v: make(v, folder, args) for v in VARIANTS}
    for v in VARIANTS:
        calls[v](0)  # warm-up
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    diff = {}
    for r in range(1, args.repeat + 1):
        outs = {}
        for v in VARIANTS:
            seconds, outs[v] = timed(calls[v], r, args.device)
            times[v].append(seconds)
        if r == 1:
            diff = {v: float((outs[v].float().cpu() - outs["diffusers"].float().cpu()).abs().max()) for v in VARIANTS}
    mem = {v: memory(v, folder, args) for v in VARIANTS}
    ref_min, ref_med = min(times["diffusers"]), statistics.median(times["diffusers"])
    unit = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS"
    rows = [[v, min(times[v]), statistics.median(times[v]), f"{min(times[v]) / ref_min:.3f}x",
             f"{statistics.median(times[v]) / ref_med:.3f}x", round(mem[v]["peak_mib"]), round(mem[v]["rise_mib"]),
             f"{diff[v]:.1e}"] for v in VARIANTS]
    head = (f"{args.size}x{args.size} images ({args.size // 8}x{args.size // 8} latents), {args.steps} Euler steps, "
            f"CFG {SCALE}, batch 1, device {args.device}, {args.threads} thread(s), {args.repeat} repeats\n\n")
    return head + table(["variant", "s/image min", "s/image median", "ratio (min)", "ratio (median)",
                         f"{unit} MiB", "rise in call MiB", "max abs image diff vs diffusers"], rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512, help="image width and height (latents: size / 8)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--folder", type=Path, help="an existing pipeline folder (default: build one in a temp dir)")
    ap.add_argument("--memory-child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--noise", type=Path, help=argparse.SUPPRESS)  # the initial noise, for diffusers
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.folder, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or build(Path(tmp) / "pipeline")
        args.noise = Path(tmp) / "noise.safetensors"
        print(measure(folder, args))


if __name__ == "__main__":
    main()
