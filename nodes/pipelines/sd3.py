"""Stable Diffusion 3 components behind the pipeline port types (nodes/pipelines/types.py): two CLIP text encoders
with projection and an optional T5 encoder, an SD3Transformer2DModel (MMDiT) predicting the rectified-flow velocity,
and the AutoencoderKL of sd.py (its shift_factor set).

The arithmetic follows diffusers' StableDiffusion3Pipeline (encode_prompt, _get_clip_prompt_embeds,
_get_t5_prompt_embeds and the transformer call of __call__) so that the same prompt, latents and sigmas give its
result (Esser et al. 2024, "Scaling Rectified Flow Transformers"):
- each CLIP gives its penultimate hidden states, hidden_states[-(clip_skip + 2)] (no final layer norm), and its
  projected pooled output (text_embeds); the two token embeddings are concatenated on D and zero-padded to T5's
  width, then the T5 tokens (max_sequence_length of them; zeros when the folder has no text_encoder_3) follow them
  on the sequence axis: (B, 77 + max_sequence_length, joint_attention_dim); pooled = both text_embeds, (B, P1 + P2);
- the transformer sees the flow input x / (1 + sigma) at timestep 1000 t, t = sigma / (1 + sigma), and predicts
  the velocity eps - x0 ("flow" under RectifiedFlowSampling; nodes/models/parametrisation.py)."""
from __future__ import annotations

from typing import Any

import torch

from ...graph.errors import NodeError
from .sd import lost_text, module_dtype
from .types import Conditioning, EncodeOptions, NetworkTextModel, TextEncoder, repeat_rows

FAMILY = "sd3"
MAX_SEQUENCE_LENGTH = 256  # StableDiffusion3Pipeline's default T5 tokens
T5_LIMIT = 512  # diffusers refuses more (SD3 was trained with 256 T5 tokens; T5's own context is 512)


class ClipPair:
    """One CLIP tokenizer + CLIPTextModelWithProjection, as SD3's _get_clip_prompt_embeds reads it."""

    def __init__(self, tokenizer: Any, encoder: torch.nn.Module):
        self.tokenizer, self.encoder = tokenizer, encoder
        self.context = int(tokenizer.model_max_length)
        self.layers = int(encoder.config.num_hidden_layers)

    def encode(self, prompts: list[str], clip_skip: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden states of layer -(clip_skip + 2) (B, 77, D), projected pooled output (B, P))."""
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.context, truncation=True,
                             return_tensors="pt").input_ids  # (B, 77)
        with torch.no_grad():
            out = self.encoder(ids.to(self.encoder.device), output_hidden_states=True)
        return out.hidden_states[-(clip_skip + 2)].float(), out.text_embeds.float()


class Sd3TextEncoder(TextEncoder):
    """CLIP-L + CLIP-G (+ T5-XXL) of SD3: prompts -> (B, 77 + max_sequence_length, joint D) tokens and (B, P) pooled."""

    family = FAMILY
    options = frozenset({"max_sequence_length", "prompt_2", "prompt_3"})

    def __init__(self, clips: tuple[ClipPair, ClipPair], t5: tuple[Any, torch.nn.Module] | None, width: int):
        self.clips, self.t5, self.width = clips, t5, width  # width: the transformer's joint_attention_dim
        self.context = clips[0].context

    def encode(self, prompts: list[str], options: EncodeOptions) -> tuple[Conditioning, list[str]]:
        """As StableDiffusion3Pipeline.encode_prompt: prompt to CLIP-L, prompt_2 to CLIP-G, prompt_3 to T5 (each
        default: prompt); the lost text is the first CLIP's (77 tokens) that lost some, else T5's (beyond
        max_sequence_length)."""
        length = options.max_sequence_length or MAX_SEQUENCE_LENGTH
        if length > T5_LIMIT:
            raise NodeError(f"param 'max_sequence_length' is {length}; SD3 takes at most {T5_LIMIT} T5 tokens "
                            f"(it was trained with {MAX_SEQUENCE_LENGTH})")
        layers = min(clip.layers for clip in self.clips)
        if options.clip_skip >= layers:
            raise NodeError(f"param 'clip_skip' is {options.clip_skip}, but the CLIP text encoders have {layers} "
                            f"layers; use 0..{layers - 1}")
        clip_texts, t5_texts = [prompts, options.texts(prompts, 2)], options.texts(prompts, 3)
        (emb_l, pool_l), (emb_g, pool_g) = (clip.encode(rows, options.clip_skip)
                                            for clip, rows in zip(self.clips, clip_texts))
        clip_tokens = torch.cat([emb_l, emb_g], dim=-1)  # (B, 77, D_l + D_g)
        clip_tokens = torch.nn.functional.pad(clip_tokens, (0, self.width - clip_tokens.shape[-1]))  # (B, 77, W)
        t5 = self.t5_tokens(t5_texts, length)  # (B, length, W)
        embeddings = torch.cat([clip_tokens, t5], dim=-2)  # (B, 77 + length, W)
        pooled = torch.cat([pool_l, pool_g], dim=-1)  # (B, P_l + P_g)
        (tok_l, tok_g), t5_tok = (clip.tokenizer for clip in self.clips), self.t5[0] if self.t5 else None
        lost = [lost_text(tok_l, self.context, p) or lost_text(tok_g, self.context, q)
                or (lost_text(t5_tok, length, r) if t5_tok else "") for p, q, r in zip(*clip_texts, t5_texts)]
        return Conditioning(embeddings, FAMILY, pooled), lost

    def t5_tokens(self, prompts: list[str], length: int) -> torch.Tensor:
        """T5 token embeddings (B, length, W); zeros without a text_encoder_3, as diffusers does."""
        if self.t5 is None:
            return torch.zeros(len(prompts), length, self.width)
        tokenizer, encoder = self.t5
        ids = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, add_special_tokens=True,
                        return_tensors="pt").input_ids  # (B, length)
        with torch.no_grad():
            return encoder(ids.to(encoder.device))[0].float()  # (B, length, W)


class Sd3Net(torch.nn.Module):
    """`transformer(x, encoder_hidden_states, pooled_projections, timestep)` as net(x_in (B, C, h, w), t_in (B,),
    context (1 or B, L, W), pooled (1 or B, P))."""

    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.transformer = transformer
        self.patch = int(transformer.config.patch_size)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.patch or x.shape[-1] % self.patch:
            raise NodeError(f"the latent is {x.shape[-1]}x{x.shape[-2]}, which the transformer's patch_size "
                            f"{self.patch} does not divide; make width and height multiples of {self.patch} x the "
                            f"VAE's factor")
        dtype = module_dtype(self.transformer)
        batch = x.shape[0]
        context = repeat_rows(context, batch).to(device=x.device, dtype=dtype)  # (B, L, W)
        pooled = repeat_rows(pooled, batch).to(device=x.device, dtype=dtype)  # (B, P)
        out = self.transformer(hidden_states=x.to(dtype), encoder_hidden_states=context, pooled_projections=pooled,
                               timestep=t, return_dict=False)[0]  # (B, C, h, w): the velocity eps - x0
        return out.to(x.dtype)


class Sd3TextModel(NetworkTextModel):
    """An SD3Transformer2DModel under rectified flow (its scheduler's shift and 1000 train timesteps)."""

    family = FAMILY
    net: Sd3Net

    def conditioning(self, cond: Conditioning) -> dict[str, torch.Tensor]:
        config, pooled = self.net.transformer.config, cond.pooled
        width, pooled_width = int(config.joint_attention_dim), int(config.pooled_projection_dim)
        if cond.embeddings.shape[-1] != width or pooled is None or pooled.shape[-1] != pooled_width:
            got = None if pooled is None else pooled.shape[-1]
            raise NodeError(f"the conditioning has token width {cond.embeddings.shape[-1]} and pooled width {got}, but "
                            f"the transformer's joint_attention_dim is {width} and pooled_projection_dim "
                            f"{pooled_width}: encode with this pipeline's text encoder")
        return {"context": cond.embeddings, "pooled": pooled}
