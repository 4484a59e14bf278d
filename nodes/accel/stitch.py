"""model.stitch: T-Stitch (Pan et al. 2024, "T-Stitch: Accelerating Sampling in Pre-Trained Diffusion Models
with Trajectory Stitching") as a Denoiser combinator: the small model denoises where sigma is above
`switch_sigma` (the early, high-noise steps), the large model at and below it.

T-Stitch states the switch as the fraction r of steps given to the small model; a sigma threshold is
the same cut for any schedule (r of a schedule = the share of its steps with sigma > switch_sigma)
and lets particles at different noise levels share one call (rows are split, each model sees only
its rows). Both models must denoise the same space: same sample shape and the same noise
parametrisation (family, sigma range, sigma_data); otherwise the node refuses."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.model import Model, ModelSampling


def sampling_signature(s: ModelSampling) -> tuple:
    """What two models must share to denoise the same latent space: family, sigma range, sigma_data."""
    return type(s).__name__, round(s.sigma_min, 9), round(s.sigma_max, 9), float(getattr(s, "sigma_data", 1.0))


def sample_shape(model: Model) -> tuple[int, ...] | None:
    """The sample shape a network model declares (its config's shape), None when it declares none."""
    config = getattr(getattr(model, "net", None), "config", None)
    shape = getattr(config, "shape", None)
    return None if shape is None else tuple(shape)


class Stitched(Model):
    """x0 of `small` for rows with sigma > switch, of `large` for the others (T-Stitch)."""

    def __init__(self, small: Model, large: Model, switch: float):
        self.small, self.large, self.switch = small, large, float(switch)

    def __repr__(self) -> str:
        return f"Stitched(small={self.small!r}, large={self.large!r}, switch_sigma={self.switch})"

    @property
    def sampling(self) -> ModelSampling:
        return self.large.sampling

    def to(self, device: torch.device) -> Stitched:
        return Stitched(self.small.to(device), self.large.to(device), self.switch)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 (B, ...) of x (B, ...) at sigma (B,); a batch on one side of the switch is one model's call."""
        early = sigma > self.switch  # (B,)
        if bool(early.all()):
            return self.small(x, sigma)
        if not bool(early.any()):
            return self.large(x, sigma)
        out = torch.empty_like(x)
        for model, rows in ((self.small, early), (self.large, ~early)):
            idx = rows.nonzero().squeeze(1)  # (R,)
            out[idx] = model(x[idx], sigma[idx])
        return out


def check_same_space(small: Model, large: Model) -> None:
    """NodeError unless both models denoise the same latent space under the same parametrisation."""
    sa, sb = sample_shape(small), sample_shape(large)
    if sa is not None and sb is not None and sa != sb:
        raise NodeError(f"model.stitch: 'small' and 'large' must share the sample shape (latent space); got small "
                        f"{list(sa)} and large {list(sb)}")
    a, b = sampling_signature(small.sampling), sampling_signature(large.sampling)
    if a != b:
        raise NodeError(f"model.stitch: 'small' and 'large' must share the noise parametrisation (family, sigma "
                        f"range, sigma_data) to hand a trajectory over; got small {a} and large {b}")
    for name, m in (("small", small), ("large", large)):
        if m.stateful:
            raise NodeError(f"model.stitch: input '{name}' is stateful (a cached model); stitch plain models and "
                            f"cache neither")


@node("model.stitch")
class ModelStitch(Node):
    """T-Stitch (Pan et al. 2024): a small model for sigma > switch_sigma, the large one below."""

    switch_sigma: float = Field(1.0, ge=0.0, description="the small model denoises where sigma > this; at or "
                                "above the schedule's sigma_max it is the large model exactly, below its "
                                "sigma_min the small model exactly")

    def run(self, small: Model, large: Model) -> Model:
        """The stitched model (1 model evaluation per call; the small one is the cheaper)."""
        check_same_space(small, large)
        return Stitched(small, large, self.switch_sigma)
