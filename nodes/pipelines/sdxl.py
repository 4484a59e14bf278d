"""SDXL components behind the pipeline port types (nodes/pipelines/types.py): CLIP tokenizers + encoders (a base's
CLIPTextModel and CLIPTextModelWithProjection; a refiner's CLIPTextModelWithProjection alone) and a
UNet2DConditionModel with SDXL's added conditioning.

The arithmetic follows diffusers' StableDiffusionXLPipeline and StableDiffusionXLImg2ImgPipeline (encode_prompt,
_get_add_time_ids, the UNet call):
- token embeddings: each encoder's hidden_states[-(clip_skip + 2)], the penultimate layer's output for
  clip_skip 0, WITHOUT the final layer norm (unlike SD 1.x's clip_skip), concatenated on D;
- pooled: text_encoder_2's projected text_embeds (B, P);
- prompt goes to CLIP-L, prompt_2 (text.encode's; default: prompt) to OpenCLIP-G, as encode_prompt zips them;
  a refiner (text_encoder null) encodes the prompt with OpenCLIP-G alone (the zip's first pair);
- force_zeros_for_empty_prompt (model_index.json): an empty prompt's embeddings and pooled are zeros
  (diffusers does it for an omitted negative prompt, negative_prompt None, whatever negative_prompt_2 is; here a
  row whose prompt and prompt_2 are both '' is zeros, and prompt '' with a non-empty prompt_2 is encoded, as
  diffusers' negative_prompt '' with that negative_prompt_2 is);
- time ids (Podell et al. 2023, "micro-conditioning"): original_size + crop_top_left + target_size, each
  (height, width) / (top, left) in pixels; a refiner's (requires_aesthetics_score) replace target_size by the
  aesthetic score (5 ids); a size not given is the pixel size of the latent being sampled (latent h, w times
  the VAE factor), filled in by the network's forward (the encoder does not see it)."""
from __future__ import annotations

from typing import Any

import torch

from ...graph.errors import NodeError
from ..core.model import ModelSampling
from ..models.parametrisation import Prediction, TimestepMode
from .sd import UNetNet, UNetTextModel, check_clip_skip, lost_text, module_device, tokenize
from .types import Conditioning, EncodeOptions, TextEncoder, repeat_rows

FAMILY = "sdxl"
DEFAULT = -1.0  # a time id not given: the latent's pixel size, filled in by SdxlUNetNet
BASE_IDS, REFINER_IDS = 6, 5  # [original (h, w), crop (top, left), target (h, w)] / [..., aesthetic score]
AESTHETIC_SCORE = 6.0  # diffusers' aesthetic_score (its negative_aesthetic_score is 2.5)


def size_columns(ids: int) -> list[int]:
    """The columns of the sizes that default to the latent's pixel size: original (h, w) [and target (h, w)]."""
    return [0, 1, 4, 5] if ids == BASE_IDS else [0, 1]


def time_ids(options: EncodeOptions, aesthetic: bool) -> torch.Tensor:
    """(1, 6): original_size + crop_top_left + target_size, DEFAULT where a size is not given; `aesthetic` (a
    refiner's): (1, 5), original_size + crop_top_left + aesthetic_score."""
    for name in ("original_size", "target_size"):
        size = getattr(options, name)
        if size is not None and min(size) < 1:
            raise NodeError(f"param {name!r} is {tuple(size)}; give (height, width) in pixels, both >= 1")
    if min(options.crop_top_left) < 0:
        raise NodeError(f"param 'crop_top_left' is {tuple(options.crop_top_left)}; give (top, left) >= 0")
    original = options.original_size or (DEFAULT, DEFAULT)
    if aesthetic:
        score = AESTHETIC_SCORE if options.aesthetic_score is None else options.aesthetic_score
        return torch.tensor([[*original, *options.crop_top_left, score]], dtype=torch.float32)  # (1, 5)
    target = options.target_size or (DEFAULT, DEFAULT)
    return torch.tensor([[*original, *options.crop_top_left, *target]], dtype=torch.float32)  # (1, 6)


class SdxlTextEncoder(TextEncoder):
    """SDXL's CLIP-L and OpenCLIP-G (a refiner's OpenCLIP-G alone): prompts -> penultimate-layer tokens
    (B, 77, sum of D) and pooled (B, P), with the time ids of a base or (`aesthetic`) a refiner."""

    family = FAMILY

    def __init__(self, tokenizers: tuple[Any, ...], encoders: tuple[torch.nn.Module, ...], zeros_for_empty: bool,
                 aesthetic: bool = False):
        self.tokenizers, self.encoders, self.zeros_for_empty = tokenizers, encoders, zeros_for_empty
        self.aesthetic = aesthetic
        self.context = int(tokenizers[0].model_max_length)  # every tokenizer's (sdxl_folder checks)
        self.options = frozenset({"original_size", "crop_top_left", "aesthetic_score" if aesthetic else "target_size",
                                  *(("prompt_2",) if len(encoders) == 2 else ())})

    @property
    def label(self) -> str:
        return f"{self.family!r} refiner" if self.aesthetic else repr(self.family)

    def texts(self, prompts: list[str], options: EncodeOptions) -> list[list[str]]:
        """Each encoder's texts: prompt to CLIP-L, prompt_2 (default: prompt) to OpenCLIP-G (encode_prompt's zip);
        one encoder reads the prompt."""
        return [prompts, options.texts(prompts, 2)][:len(self.encoders)]

    def encode(self, prompts: list[str], options: EncodeOptions) -> tuple[Conditioning, list[str]]:
        """Each encoder's hidden_states[-(clip_skip + 2)] of its texts concatenated; pooled from the last encoder."""
        k = options.clip_skip
        ids = time_ids(options, self.aesthetic)
        texts = self.texts(prompts, options)
        hidden = []
        for tokenizer, encoder, rows in zip(self.tokenizers, self.encoders, texts):
            check_clip_skip(k, encoder)
            tokens = tokenize(tokenizer, rows, self.context).input_ids.to(module_device(encoder))  # (B, L)
            with torch.no_grad():
                out = encoder(tokens, output_hidden_states=True)
            hidden.append(out.hidden_states[-(k + 2)].float())  # (B, L, Di)
        emb = torch.cat(hidden, dim=-1)  # (B, L, sum of Di)
        pooled = out.text_embeds.float()  # (B, P): text_encoder_2's projection
        if self.zeros_for_empty:  # diffusers zeros an omitted negative prompt: here a row whose every text is ''
            keep = torch.tensor([any(rows[i] for rows in texts) for i in range(len(prompts))], device=emb.device)
            emb = torch.where(keep[:, None, None], emb, torch.zeros_like(emb))  # keep: (B,)
            pooled = torch.where(keep[:, None], pooled, torch.zeros_like(pooled))
        cond = Conditioning(emb, FAMILY, pooled, {"time_ids": ids})
        lost = [max((lost_text(t, self.context, rows[i]) for t, rows in zip(self.tokenizers, texts)), key=len)
                for i in range(len(prompts))]  # the longest of the encoders' truncation reports
        return cond, lost


class SdxlUNetNet(UNetNet):
    """The SDXL UNet as net(x_in (B, C, h, w), t_in (B,), context (B, L, D), text_embeds (B, P), time_ids (B, I)),
    I = 6 (base) or 5 (refiner).

    Each conditioning tensor may have 1 row for any batch; size ids equal to DEFAULT become the latent's pixel size."""

    def __init__(self, unet: torch.nn.Module, factor: int, ids: int):
        super().__init__(unet)
        self.factor, self.columns = factor, size_columns(ids)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, text_embeds: torch.Tensor,
                time_ids: torch.Tensor) -> torch.Tensor:
        ids = repeat_rows(time_ids, x.shape[0]).to(x.device, torch.float32).clone()  # (B, I)
        height, width = (n * self.factor for n in x.shape[-2:])
        sizes = ids[:, self.columns]  # (B, 4) or (B, 2)
        pixels = sizes.new_tensor([height, width] * (len(self.columns) // 2))
        ids[:, self.columns] = torch.where(sizes == DEFAULT, pixels, sizes)
        return self.call(x, t, context, {"text_embeds": text_embeds, "time_ids": ids})


class SdxlTextModel(UNetTextModel):
    """An SDXL UNet (addition_embed_type 'text_time') under its scheduler's noise process; `ids` time ids wide (6, or
    a refiner's 5)."""

    family = FAMILY

    def __init__(self, unet: torch.nn.Module, sampling: ModelSampling, prediction: Prediction,
                 timestep: TimestepMode, factor: int, ids: int = BASE_IDS):
        super().__init__(SdxlUNetNet(unet, factor, ids), sampling, prediction, timestep)
        self.ids, self.pooled_dim = ids, pooled_width(unet, ids)

    def conditioning(self, cond: Conditioning) -> dict[str, torch.Tensor]:
        context = super().conditioning(cond)["context"]
        width = None if cond.pooled is None else int(cond.pooled.shape[-1])
        ids = cond.extras.get("time_ids")
        if width != self.pooled_dim or ids is None or ids.shape[-1] != self.ids:
            got = None if ids is None else int(ids.shape[-1])
            what = "an SDXL refiner's UNet" if self.ids == REFINER_IDS else "the SDXL UNet"
            raise NodeError(f"the conditioning has pooled width {width} and {got} time ids, but {what} takes pooled "
                            f"width {self.pooled_dim} and {self.ids} time ids: encode with this pipeline's text "
                            f"encoder")
        return {"context": context, "text_embeds": cond.pooled, "time_ids": ids}


def pooled_width(unet: torch.nn.Module, ids: int = BASE_IDS) -> int:
    """The pooled width P the UNet's add_embedding takes besides its `ids` time ids (each addition_time_embed_dim)."""
    return int(unet.add_embedding.linear_1.in_features) - ids * int(unet.config.addition_time_embed_dim)
