"""The port types of text-to-image pipelines: what `model.pipeline` outputs and the nodes after it pass on.

Contracts (docs/ARCHITECTURE.md, "Text-to-image pipelines"), kept small so SDXL, SD3 and Flux plug in:
- `Conditioning`: what a text encoder returns, a frozen bundle of tensors tagged with its family (never a dict); SD's is the
  token embeddings (B, L, D); later families add `pooled` (B, P) (SDXL, SD3, Flux) and per-family extras.
- `TextEncoder`: prompts + EncodeOptions -> Conditioning (tokenizer(s) + encoder(s)), with its own context length;
  it names the options it honours (`options`), and text.encode refuses any other option set by the user.
- `TextModel`: a text-conditioned network, not yet a Denoiser; `bind(cond)` gives one (model.text_condition).
- `Vae`: latents <-> images (B, 3, H, W) in [0, 1], with its spatial factor, channels and latent scaling."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch

from ...graph.errors import NodeError
from ..core.model import Model, ModelSampling
from ..models.parametrisation import NetworkDenoiser, Prediction, TimestepMode
from .tiling import Tiling


def repeat_rows(t: torch.Tensor, batch: int, what: str = "the conditioning") -> torch.Tensor:
    """t (1 or batch, ...) as (batch, ...): one prompt serves every latent; B prompts need B latents."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] != 1:
        raise NodeError(f"{what} holds {t.shape[0]} prompts but the latent batch is {batch}; encode one prompt, "
                        f"or as many prompts as latents")
    return t.expand(batch, *t.shape[1:])


@dataclass(frozen=True)
class Conditioning:
    """Text conditioning of one pipeline family: embeddings (B, L, D) of B prompts; `pooled` (B, P) where it has one."""

    embeddings: torch.Tensor  # (B, L, D)
    family: str  # the TextModel family it binds to ("sd"); binding another family's conditioning is an error
    pooled: torch.Tensor | None = None  # (B, P): SDXL / SD3 / Flux; None for SD 1.x/2.x
    # per-family tensors with B rows (or 1), e.g. SDXL's "time_ids" (B, 6) (a refiner's (B, 5)), Flux's "guidance" (B,)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return int(self.embeddings.shape[0])

    def cache_encode(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The tensors for the disk cache (runtime/values.py rebuilds it with cache_decode)."""
        tensors = {"embeddings": self.embeddings, **{f"extra.{k}": v for k, v in self.extras.items()}}
        if self.pooled is not None:
            tensors["pooled"] = self.pooled
        return tensors, {"family": self.family}

    @classmethod
    def cache_decode(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Conditioning:
        extras = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
        return cls(tensors["embeddings"], str(meta["family"]), tensors.get("pooled"), extras)


@dataclass(frozen=True)
class EncodeOptions:
    """text.encode's settings; beyond clip_skip each applies to the families whose TextEncoder names it in `options`."""

    clip_skip: int = 0  # every CLIP-based family
    original_size: tuple[int, int] | None = None  # SDXL micro-conditioning (height, width); None = the latent's size
    crop_top_left: tuple[int, int] = (0, 0)  # SDXL micro-conditioning (top, left)
    target_size: tuple[int, int] | None = None  # SDXL micro-conditioning (height, width); None = the latent's size
    max_sequence_length: int | None = None  # T5 tokens (SD3: 256, Flux: 512 by default); None = the family's default
    guidance: float | None = None  # Flux's distilled guidance embedding (FluxPipeline's guidance_scale)
    prompt_2: str | None = None  # the 2nd encoder's text (SDXL: OpenCLIP-G, SD3: CLIP-G, Flux: T5); None = prompt
    prompt_3: str | None = None  # the third encoder's text (SD3: T5); None = prompt
    aesthetic_score: float | None = None  # an SDXL refiner's aesthetic-score time id; None = 6.0 (diffusers')

    def texts(self, prompts: list[str], encoder: int) -> list[str]:
        """What encoder `encoder` (1, 2, 3: read with prompt, prompt_2, prompt_3) gets for each row: its own prompt_k
        repeated, or the rows' prompts where prompt_k is None (diffusers' `prompt_2 or prompt`, but '' stays '')."""
        own = {1: None, 2: self.prompt_2, 3: self.prompt_3}[encoder]
        return prompts if own is None else [own] * len(prompts)

    def set_beyond_defaults(self) -> list[str]:
        """Names of the options (other than clip_skip) that differ from their defaults."""
        default = EncodeOptions()
        return [f.name for f in fields(self) if f.name != "clip_skip" and getattr(self, f.name) != getattr(default, f.name)]


class TextEncoder(ABC):
    """Prompts -> Conditioning; `family` names the pipeline family whose TextModel it matches."""

    family: str
    context: int  # tokens per prompt the encoder sees (CLIP: 77)
    options: frozenset[str] = frozenset()  # EncodeOptions fields beyond clip_skip that this family honours

    @property
    def label(self) -> str:
        """How messages name this encoder: its family (an SDXL refiner's adds 'refiner')."""
        return repr(self.family)

    @abstractmethod
    def encode(self, prompts: list[str], options: EncodeOptions) -> tuple[Conditioning, list[str]]:
        """(conditioning, the text each prompt lost to truncation: '' when none was lost)."""


class TextModel(ABC):
    """A text-conditioned network under its noise process; bound to a Conditioning it is a Denoiser."""

    family: str

    @property
    @abstractmethod
    def sampling(self) -> ModelSampling: ...

    @abstractmethod
    def bind(self, cond: Conditioning) -> Model:
        """The Denoiser (x, sigma) -> x0 conditioned on `cond` (its rows repeated to the latent batch)."""


class NetworkTextModel(TextModel):
    """A TextModel over one network net(x_in, t_in, **tensors) under its noise process: bind checks the family and
    gives a NetworkDenoiser with the tensors `conditioning` picks (and checks) from the Conditioning."""

    def __init__(self, net: torch.nn.Module, sampling: ModelSampling, prediction: Prediction, timestep: TimestepMode):
        self.net, self._sampling, self.prediction, self.timestep = net, sampling, prediction, timestep

    @property
    def sampling(self) -> ModelSampling:
        return self._sampling

    @abstractmethod
    def conditioning(self, cond: Conditioning) -> dict[str, torch.Tensor]:
        """The network's keyword tensors from `cond` (NodeError when their widths do not fit the network)."""

    def bind(self, cond: Conditioning) -> Model:
        if cond.family != self.family:
            raise NodeError(f"input 'cond' comes from a {cond.family!r} text encoder, but the model is a {self.family!r} "
                            f"model: encode with this pipeline's text_encoder")
        return NetworkDenoiser(self.net, self._sampling, self.prediction, self.timestep, cond=self.conditioning(cond))


class Vae(ABC):
    """An image autoencoder: images (B, 3, H, W) in [0, 1] <-> latents (B, C, H/f, W/f) in the model's scale."""

    factor: int  # spatial downscale f
    channels: int  # latent channels C
    tile: int = 0  # default tile side in pixels for tiled calls (tiling.Tiling); 0 = this VAE cannot tile

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this: f, or 2 f where the model packs 2x2 latent patches (Flux)."""
        return self.factor

    @abstractmethod
    def encode(self, images: torch.Tensor, tiling: Tiling | None = None) -> torch.Tensor:
        """Scaled latents (B, C, H/f, W/f) of images (B, 3, H, W) in [0, 1] (the posterior's mean); `tiling`
        cuts the call into tiles and/or batch rows (vae.encode's options)."""

    @abstractmethod
    def decode(self, latents: torch.Tensor, tiling: Tiling | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] of scaled latents (B, C, h, w); `tiling` as for encode."""


class Pipeline(NamedTuple):
    """model.pipeline's outputs: what every family's loader (nodes/pipelines/folder.py FAMILIES) returns."""

    model: TextModel
    text_encoder: TextEncoder
    vae: Vae
