"""Small MLP classifiers of flattened images, clean or noise-conditional, their config, and their
safetensors reader/writer (networks/checkpoint.py), shared by training/train_digits_classifier.py
and the loader nodes (model.digits_classifier, model.digits_noisy_classifier).

The clean classifier is the verifier, reward and feature extractor of the metrics: its `features`
are the penultimate-layer activations (B, F). The noisy one sees c_in x (c_in = 1/sqrt(sigma^2 +
sigma_data^2), as EDM preconditions its denoiser) and ln(sigma)/4 through a Fourier embedding that
modulates every block (FiLM), as classifier guidance needs (Dhariwal & Nichol 2021)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..classifier import Classifier, NoisyClassifier
from .checkpoint import load_network, save_network
from .mlp_denoiser import Block

EXAMPLE = '{"shape": [8, 8], "hidden": 128, "layers": 2, "features": 64, "classes": 10, "noisy": false}'
SIGMA_FLOOR = 1e-3  # the embedding's smallest sigma: sigma = 0 (a clean sample) is read as this


class ClassifierConfig(BaseModel):
    """Architecture of a ClassifierNet (plain JSON data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str = Field("mlp_classifier", pattern="^mlp_classifier$")
    shape: list[int] = Field([64], min_length=1, description="sample shape, e.g. [8, 8]; flattened inside")
    hidden: int = Field(128, ge=8)
    layers: int = Field(2, ge=1, description="residual blocks")
    features: int = Field(64, ge=2, description="width F of the penultimate layer (the feature embedding)")
    classes: int = Field(10, ge=2)
    noisy: bool = Field(False, description="noise-conditional: inputs x_sigma and sigma")
    embedding: int = Field(32, ge=4, description="width of the sigma embedding (noisy only)")
    sigma_data: float = Field(0.5, gt=0, description="data std of the input scaling (noisy only)")

    @property
    def dim(self) -> int:
        return math.prod(self.shape)


class ClassifierNet(torch.nn.Module):
    """Residual MLP -> features (B, F) -> logits (B, C); blocks are FiLM-modulated by sigma when noisy."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        w, e = config.hidden, config.embedding
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(100.0), e // 2)), persistent=False)
        self.time = torch.nn.Sequential(torch.nn.Linear(e, e), torch.nn.SiLU(), torch.nn.Linear(e, e)) \
            if config.noisy else None
        self.inp = torch.nn.Linear(config.dim, w)
        self.blocks = torch.nn.ModuleList(Block(w, e) for _ in range(config.layers))
        self.feat = torch.nn.Sequential(torch.nn.LayerNorm(w), torch.nn.SiLU(), torch.nn.Linear(w, config.features),
                                        torch.nn.SiLU())
        self.head = torch.nn.Linear(config.features, config.classes)

    def embed(self, x: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
        """The block input (B, W): x itself, or c_in x modulated by sigma (B,) when noisy."""
        b = x.shape[0]
        if self.time is None:
            e = x.new_zeros(b, self.config.embedding)  # (B, E): FiLM reduces to a learned affine map
        else:
            sd = self.config.sigma_data
            x = x * (sigma ** 2 + sd ** 2).rsqrt().to(x.dtype).reshape(b, *[1] * (x.ndim - 1))  # (B, ...)
            angles = (sigma.clamp(min=SIGMA_FLOOR).log() / 4).to(x.dtype)[:, None] * self.freqs  # (B, E/2)
            e = self.time(torch.cat([angles.cos(), angles.sin()], dim=1))  # (B, E)
        h = self.inp(x.reshape(b, -1))  # (B, W)
        for block in self.blocks:
            h = block(h, e)  # (B, W)
        return h

    def features(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Penultimate activations (B, F) of x (B, *shape) (at sigma (B,) when noisy)."""
        return self.feat(self.embed(x, sigma))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C) of x (B, *shape) (at sigma (B,) when noisy)."""
        return self.head(self.features(x, sigma))


class CleanClassifier(Classifier):
    """log p(class | x0) and features of clean samples from a ClassifierNet (not noisy)."""

    def __init__(self, net: ClassifierNet):
        self.net, self.classes = net, net.config.classes

    def to(self, device: torch.device) -> CleanClassifier:
        return CleanClassifier(self.net.to(device))

    def _dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        return self.net(x0.to(self._dtype())).log_softmax(dim=1).to(x0.dtype)  # (B, C)

    def features(self, x0: torch.Tensor) -> torch.Tensor:
        return self.net.features(x0.to(self._dtype())).to(x0.dtype)  # (B, F)


class NoisyNetClassifier(NoisyClassifier):
    """log p(class | x_sigma) from a noise-conditional ClassifierNet, differentiable in x."""

    def __init__(self, net: ClassifierNet):
        self.net, self.classes = net, net.config.classes

    def to(self, device: torch.device) -> NoisyNetClassifier:
        return NoisyNetClassifier(self.net.to(device))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        dtype = next(self.net.parameters()).dtype
        return self.net(x.to(dtype), sigma.to(dtype)).log_softmax(dim=1).to(x.dtype)  # (B, C)


def save_classifier(net: ClassifierNet, path: str | Path, extra: dict[str, Any] | None = None,
                    dtype: torch.dtype = torch.float32) -> Path:
    """Write the state dict (in `dtype`; the loader casts to float32) with the config (and `extra`) as JSON metadata."""
    return save_network(net, net.config, path, extra, dtype)


def load_classifier(path: str | Path, config: dict[str, Any] | None = None) -> ClassifierNet:
    """A ClassifierNet (eval mode) from a safetensors file; `config` overrides the file's own."""
    return load_network(path, config, ClassifierConfig, ClassifierNet, EXAMPLE)
