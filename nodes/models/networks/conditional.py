"""ConditionalNetwork: a class-conditional network seen as a Model bound to one class or to the
null class (the unconditional model of classifier-free guidance, Ho & Salimans 2022).

model.condition binds a label (docs/ARCHITECTURE.md: conditioning is bound, not passed), so guidance nodes
receive two plain Denoisers and never see a label."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ....graph.errors import NodeError
from ...core.model import ModelSampling
from ..labelled import Labelled
from ..parametrisation import Network, NetworkDenoiser, Prediction


class ConditionalNetwork(Labelled):
    """A network with a class input under a parametrisation, bound to `label` (None = the null class)."""

    def __init__(self, net: Network, sampling: ModelSampling, classes: int, prediction: Prediction = "edm",
                 label: int | None = None):
        self.net, self.classes, self.label = net, int(classes), label
        self.inner = NetworkDenoiser(net, sampling, prediction, cond={"label": label})

    def __repr__(self) -> str:
        return f"ConditionalNetwork({self.inner!r}, label={self.label})"

    @property
    def sampling(self) -> ModelSampling:
        return self.inner.sampling

    def restricted(self, label: int) -> ConditionalNetwork:
        """The same network bound to class `label` (NodeError outside 0..classes-1)."""
        if not 0 <= label < self.classes:
            raise NodeError(f"label {label} is out of range: this model has classes 0..{self.classes - 1}")
        return ConditionalNetwork(self.net, self.sampling, self.classes, self.inner.prediction, label)

    def unconditional(self) -> ConditionalNetwork:
        """The same network bound to the null class."""
        return ConditionalNetwork(self.net, self.sampling, self.classes, self.inner.prediction, None)

    def broadened(self, factor: float) -> ConditionalNetwork:
        raise NodeError("'weakness' applies to analytic mixtures only; for a network, load a weaker network "
                        "as the autoguidance guide")

    @property
    def skippable_blocks(self) -> int:
        """The network's residual blocks (its `block_count`; 0 for a network that cannot skip any)."""
        return int(getattr(self.net, "block_count", 0))

    def skipping(self, blocks: Sequence[int]) -> ConditionalNetwork:
        """The same model with the network's residual blocks `blocks` replaced by the identity."""
        count = self.skippable_blocks
        if count == 0:
            return super().skipping(blocks)
        bad = sorted({b for b in blocks if not 0 <= b < count})
        if bad:
            raise NodeError(f"block indices {bad} are out of range: this network has blocks 0..{count - 1}")
        return ConditionalNetwork(self.net.skipping(blocks), self.sampling, self.classes, self.inner.prediction,
                                  self.label)

    def to(self, device: torch.device) -> ConditionalNetwork:
        move = getattr(self.net, "to", None)
        net = self.net if move is None else move(device)
        return ConditionalNetwork(net, self.sampling, self.classes, self.inner.prediction, self.label)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 (B, ...) of x (B, ...) at sigma (B,), in the network's dtype, returned in x's dtype."""
        return self.evaluate(self.inner, x, sigma)

    def condition_embedding(self) -> torch.Tensor:
        """The class embedding (E,) the network adds for the bound label (the null class when unbound)."""
        if not callable(getattr(self.net, "class_embedding", None)):
            return super().condition_embedding()
        return self.net.class_embedding(self.label)

    def denoise_embedded(self, x: torch.Tensor, sigma: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x0 (B, ...) with per-row class embeddings emb (B, E) in place of the label's (guidance.cads)."""
        return self.evaluate(self.inner.bind(label=emb), x, sigma)

    def evaluate(self, inner: NetworkDenoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """inner's x0 (B, ...) computed in the network's dtype, returned in x's dtype."""
        dtype = next(self.net.parameters()).dtype if isinstance(self.net, torch.nn.Module) else x.dtype
        return inner(x.to(dtype), sigma.to(dtype)).to(x.dtype)
