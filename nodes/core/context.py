"""NodeContext: what the runtime hands a node that asks for it (a `ctx: NodeContext`
argument of run): device, noise, progress, cancellation and accounting. Nodes never import
the runtime; everything they need arrives here."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...graph.errors import NodeError, RunCancelled
from ...graph.workflow import Workflow
from .memory import Residency
from .noise import NoiseSource


def _never() -> bool:
    return False


class Checkpoints:
    """A node's checkpoint service (resumable loops); this base is the no-op one, used when the run has
    no disk cache or the node is uncached. The runtime's `KeyedCheckpoints` stores files."""

    @property
    def enabled(self) -> bool:
        """False when save() stores nothing (so callers skip encoding a state)."""
        return False

    def save(self, step: int, tensors: dict[str, torch.Tensor]) -> None:
        """Store the loop's state after `step` steps, replacing older checkpoints."""

    def load_latest(self) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(step, tensors) of the newest sound checkpoint, or None."""
        return None

    def discard(self) -> None:
        """Delete every checkpoint (the node's result is stored)."""


@dataclass
class NodeContext:
    """Per-node services; `NodeContext.detached()` makes one for use outside a workflow run."""

    node_id: str
    device: torch.device
    out_dir: Path
    seed: int | None = None
    on_progress: Callable[[int, int], None] | None = None
    on_warning: Callable[[str], None] | None = None
    on_preview: Callable[[int, int, torch.Tensor], None] | None = None
    is_cancelled: Callable[[], bool] = _never
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoints: Checkpoints = field(default_factory=Checkpoints)
    workflow: Workflow | None = None  # the run's workflow (overrides and seed applied), for provenance
    residency: Residency | None = None  # the run's device-memory manager; None: modules stay where they are put

    @classmethod
    def detached(cls, device: str | torch.device = "cpu", seed: int | None = 0,
                 out_dir: str | Path = ".") -> NodeContext:
        return cls(node_id="<detached>", device=torch.device(device), out_dir=Path(out_dir), seed=seed)

    @property
    def noise(self) -> NoiseSource:
        """The run's NoiseSource; only nodes declaring `uses_seed = True` get one (it enters their cache key)."""
        if self.seed is None:
            raise NodeError(f"node '{self.node_id}' draws noise but does not declare uses_seed = True")
        return NoiseSource(self.seed)

    def progress(self, step: int, total: int) -> None:
        """Report step `step` of `total` of a loop (renders as a progress bar)."""
        if self.on_progress is not None:
            self.on_progress(step, total)

    def previews(self) -> bool:
        """True when someone receives previews (so a node skips computing them otherwise)."""
        return self.on_preview is not None

    def preview(self, step: int, total: int, image: torch.Tensor) -> None:
        """Show a picture (3, h, w) in [0, 1] of a loop's current result after step `step` of `total`."""
        if self.on_preview is not None:
            self.on_preview(step, total, image)

    def warn(self, message: str) -> None:
        """Report something the user should know that does not stop the node (a NodeWarning event; in the report)."""
        self.metrics.setdefault("warnings", []).append(message)
        if self.on_warning is not None:
            self.on_warning(message)

    def check_cancelled(self) -> None:
        """Raise RunCancelled if the run was cancelled; call between steps of long loops."""
        if self.is_cancelled():
            raise RunCancelled(f"run cancelled during node '{self.node_id}'")

    def add_nfe(self, n: int) -> None:
        """Account `n` denoiser evaluations to this node (shown in the run report)."""
        self.metrics["nfe"] = self.metrics.get("nfe", 0) + int(n)

    def record(self, **values: Any) -> None:
        """Attach JSON-serialisable values (metric results, counts) to this node's report entry."""
        self.metrics.update(values)
