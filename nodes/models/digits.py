"""model.digits: the shipped class-conditional models of scikit-learn's 8x8 digits, trained on the
train split of nodes/data/digits.py by training/train_digits.py (weights in nodes/models/weights/):

- main: EDM preconditioning, hidden 256, 3 residual blocks (model.skip_blocks can skip 0..2);
- weak: the same recipe made smaller (hidden 64, 1 block) and trained 5x shorter, the guide of
  autoguidance (Karras et al. 2024);
- flow: main's network trained as a rectified flow (velocity eps - x0 at flow time t), so flow
  schedules (sd3 time shift) and samplers (sampler.flow_sde) run on a real model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..api import Node, node
from .labelled import Labelled
from .networks.mlp_denoiser import load_mlp
from .safetensors_model import file_state, mlp_model

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FILES = {"main": "digits_edm.safetensors", "weak": "digits_edm_weak.safetensors", "flow": "digits_flow.safetensors"}
WEIGHTS = WEIGHTS_DIR / FILES["main"]


@node("model.digits", version=2)
class ModelDigits(Node):
    """Class-conditional 8x8 digits denoiser with a null class for CFG (Karras et al. 2022; Ho & Salimans 2022)."""

    variant: Literal["main", "weak", "flow"] = Field("main", description="main (EDM), weak (small, short-"
                                                     "trained: autoguidance's guide) or flow (rectified flow)")

    def external_state(self) -> Any:
        """The weights file's size and mtime: retrained weights invalidate the cache."""
        return file_state(WEIGHTS_DIR / FILES[self.variant])

    def run(self) -> Labelled:
        """Samples are (B, 8, 8) in [-1, 1]; bound to the null class until model.condition picks a digit."""
        return mlp_model(load_mlp(WEIGHTS_DIR / FILES[self.variant]))
