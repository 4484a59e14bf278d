"""Flux components behind the pipeline port types (nodes/pipelines/types.py): CLIP (its pooled output) and T5 (its
token embeddings) text encoders, a FluxTransformer2DModel under rectified flow that sees the latent as packed 2x2
patches with their position ids and, where it is guidance-distilled (FLUX.1-dev), a guidance scalar; an AutoencoderKL
with Flux's shift_factor; and the time shift its scheduler config asks for (schedule.flux reads it).

The arithmetic follows diffusers' FluxPipeline (encode_prompt, _pack_latents, _unpack_latents,
_prepare_latent_image_ids, calculate_shift, the transformer call with timestep = flow time t) so that the same
prompt, latents and sigmas give its result; diffusers and transformers are never imported here (the modules arrive
loaded, nodes/pipelines/flux_folder.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ...graph.errors import NodeError
from ..models.sampling import RectifiedFlowSampling
from ..schedules.time_shift import flux_mu
from .sd import KLVae, lost_text, module_dtype
from .types import Conditioning, EncodeOptions, NetworkTextModel, TextEncoder, repeat_rows

FAMILY = "flux"
DEFAULT_GUIDANCE = 3.5  # FluxPipeline's guidance_scale
MAX_T5_TOKENS = 512  # FluxPipeline's default max_sequence_length, and the most it accepts
# FlowMatchEulerDiscreteScheduler's defaults for the keys the shift reads
SHIFT_DEFAULTS: dict[str, Any] = {"use_dynamic_shifting": False, "shift": 1.0, "base_image_seq_len": 256,
                                  "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}
# scheduler settings that reshape FluxPipeline's grid beyond the shift, and the value that leaves it alone
GRID_NEUTRAL: dict[str, Any] = {"shift_terminal": None, "use_karras_sigmas": False, "use_exponential_sigmas": False,
                                "use_beta_sigmas": False, "invert_sigmas": False, "use_flow_sigmas": False,
                                "time_shift_type": "exponential"}
# flow time above which a float32 VE latent x = x0 + sigma eps (sigma = t / (1 - t) > 1e4) has lost the digits of x0
FLOAT32_FLOW_TIME = 1 - 1e-4


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): each 2x2 patch one token, channels-major (diffusers' _pack_latents)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # (B, h/2, w/2, C, 2, 2)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h/2 * w/2, 4C) -> (B, C, h, w), the inverse of `pack` (diffusers' _unpack_latents)."""
    b, _, c4 = tokens.shape
    x = tokens.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # (B, C, h/2, 2, w/2, 2)
    return x.reshape(b, c4 // 4, h, w)


def image_ids(rows: int, cols: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(rows * cols, 3) rotary position ids of the packed tokens: (0, row, column), row-major."""
    r = torch.arange(rows).repeat_interleave(cols)  # (N,)
    c = torch.arange(cols).repeat(rows)  # (N,)
    return torch.stack([torch.zeros_like(r), r, c], dim=1).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class FlowShift:
    """The time shift of a FlowMatchEulerDiscreteScheduler config as FluxPipeline drives it: e^mu with mu linear in
    the image tokens (use_dynamic_shifting: FLUX.1-dev), else the static `shift` (FLUX.1-schnell: 1)."""

    dynamic: bool
    shift: float
    base_tokens: int
    max_tokens: int
    base_shift: float
    max_shift: float
    unsupported: tuple[str, ...] = ()  # config keys that reshape the grid further (schedule.flux refuses them)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FlowShift:
        c = {**SHIFT_DEFAULTS, **GRID_NEUTRAL, **config}
        unsupported = tuple(f"{k}={c[k]!r}" for k, neutral in GRID_NEUTRAL.items() if (c[k] or None) != (neutral or None))
        return cls(bool(c["use_dynamic_shifting"]), float(c["shift"]), int(c["base_image_seq_len"]),
                   int(c["max_image_seq_len"]), float(c["base_shift"]), float(c["max_shift"]), unsupported)

    def factor(self, image_tokens: int) -> float:
        """The VE factor s (sigma' = s sigma, i.e. t' = s t / (1 + (s - 1) t)) at this many image tokens."""
        if not self.dynamic:
            return self.shift
        return math.exp(flux_mu(image_tokens, self.base_shift, self.max_shift, self.base_tokens, self.max_tokens))


class FluxTextEncoder(TextEncoder):
    """CLIP's pooled output (B, P) and T5's token embeddings (B, L, D), as FluxPipeline's encode_prompt, plus the
    guidance scalar of a guidance-distilled transformer in `extras["guidance"]` (B,)."""

    family = FAMILY
    options = frozenset({"max_sequence_length", "guidance", "prompt_2"})

    def __init__(self, clip_tokenizer: Any, clip: torch.nn.Module, t5_tokenizer: Any, t5: torch.nn.Module,
                 guidance_embeds: bool):
        self.clip_tokenizer, self.clip, self.t5_tokenizer, self.t5 = clip_tokenizer, clip, t5_tokenizer, t5
        self.guidance_embeds = guidance_embeds
        self.context = int(clip_tokenizer.model_max_length)  # 77: the warning's count (T5 keeps up to 512)

    def encode(self, prompts: list[str], options: EncodeOptions) -> tuple[Conditioning, list[str]]:
        """T5 tokens of prompt_2 (default: prompt) in max_sequence_length (default 512) tokens, CLIP pooled of the
        prompt in 77, the guidance (default 3.5)."""
        if options.clip_skip:
            raise NodeError("param 'clip_skip' does not apply to Flux, which conditions on CLIP's pooled output "
                            "(its last layer); remove it")
        length = options.max_sequence_length or MAX_T5_TOKENS
        if length > MAX_T5_TOKENS:
            raise NodeError(f"param 'max_sequence_length' is {length}; Flux takes at most {MAX_T5_TOKENS} T5 tokens")
        extras = {}
        guidance = self.guidance(options.guidance)
        if guidance is not None:
            extras["guidance"] = torch.full((len(prompts),), guidance, dtype=torch.float32)  # (B,)
        t5_texts = options.texts(prompts, 2)  # FluxPipeline's prompt_2 goes to T5, prompt to CLIP
        pooled = self.pooled(prompts)  # (B, P)
        tokens = self.tokens(t5_texts, length)  # (B, L, D)
        lost = [max(lost_text(self.clip_tokenizer, self.context, p), lost_text(self.t5_tokenizer, length, q), key=len)
                for p, q in zip(prompts, t5_texts)]
        return Conditioning(tokens.float(), FAMILY, pooled.float(), extras), lost

    def guidance(self, value: float | None) -> float | None:
        """The distilled guidance scale; None for a transformer without a guidance embedding (refusing a value)."""
        if self.guidance_embeds:
            return DEFAULT_GUIDANCE if value is None else value
        if value is not None:
            raise NodeError("param 'guidance' does not apply: this Flux transformer has no guidance embedding "
                            "(config guidance_embeds is false, as FLUX.1-schnell); remove it, or use "
                            "guidance.cfg with a negative prompt for classifier-free guidance")
        return None

    def pooled(self, prompts: list[str]) -> torch.Tensor:
        """CLIP's pooler_output (B, P) of prompts padded and truncated to its 77 tokens."""
        ids = self.clip_tokenizer(prompts, padding="max_length", max_length=self.context, truncation=True,
                                  return_tensors="pt").input_ids  # (B, 77)
        with torch.no_grad():
            return self.clip(ids.to(next(self.clip.parameters()).device)).pooler_output  # (B, P)

    def tokens(self, prompts: list[str], length: int) -> torch.Tensor:
        """T5's last hidden states (B, length, D), padded and truncated to `length` tokens, no attention mask."""
        ids = self.t5_tokenizer(prompts, padding="max_length", max_length=length, truncation=True,
                                return_tensors="pt").input_ids  # (B, L)
        with torch.no_grad():
            return self.t5(ids.to(next(self.t5.parameters()).device))[0]  # (B, L, D)


class FluxNet(torch.nn.Module):
    """The transformer as net(x_in (B, C, h, w), t_in (B,), context (1|B, L, D), pooled (1|B, P), guidance (1|B,)):
    packs x into 2x2-patch tokens with their ids, passes flow time t = t_in / multiplier, unpacks the velocity."""

    def __init__(self, transformer: torch.nn.Module, multiplier: float):
        super().__init__()
        self.transformer, self.multiplier = transformer, multiplier

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, pooled: torch.Tensor,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        if h % 2 or w % 2:
            raise NodeError(f"the latent is {h}x{w}; Flux packs 2x2 latent patches, so both sides must be even "
                            f"(image sides multiples of 2 x the VAE's factor)")
        flow_t = t / self.multiplier  # (B,) in [0, 1]
        check_precision(x, flow_t)
        dtype, device = module_dtype(self.transformer), x.device

        def rows(v: torch.Tensor) -> torch.Tensor:  # a disk-cached Conditioning comes back on the CPU
            return repeat_rows(v, b).to(device=device, dtype=dtype)

        out = self.transformer(
            hidden_states=pack(x).to(dtype), timestep=flow_t.to(dtype), guidance=None if guidance is None else
            rows(guidance), pooled_projections=rows(pooled), encoder_hidden_states=rows(context),
            txt_ids=torch.zeros(context.shape[1], 3, device=device, dtype=dtype),
            img_ids=image_ids(h // 2, w // 2, device, dtype), return_dict=False)[0]  # (B, hw/4, 4C)
        return unpack(out, h, w).to(x.dtype)  # (B, C, h, w)


def check_precision(x: torch.Tensor, flow_t: torch.Tensor) -> None:
    """Refuse a VE latent below float64 near t = 1 (sigma > 1e4), where it no longer holds the image's digits."""
    if x.dtype != torch.float64 and bool((flow_t > FLOAT32_FLOW_TIME).any()):
        raise NodeError(f"the latent is {str(x.dtype).removeprefix('torch.')} at flow time t = "
                        f"{float(flow_t.max()):.9f} (sigma = {float((flow_t / (1 - flow_t)).max()):.3g}): a latent "
                        f"x0 + sigma eps that large keeps too few digits of x0; set latent.empty's 'dtype' to "
                        f"float64 (txt2img_flux.json does), or start below t = {FLOAT32_FLOW_TIME} "
                        f"(schedule.flux's 'gap' >= {1 - FLOAT32_FLOW_TIME:.0e})")


class FluxTextModel(NetworkTextModel):
    """A FluxTransformer2DModel under rectified flow (velocity prediction), with its scheduler's time shift."""

    family = FAMILY

    def __init__(self, transformer: torch.nn.Module, sampling: RectifiedFlowSampling, shift: FlowShift,
                 vae_factor: int):
        super().__init__(FluxNet(transformer, sampling.multiplier), sampling, "flow", "continuous")
        self.shift, self.vae_factor = shift, vae_factor
        config = transformer.config
        self.guidance_embeds = bool(config.guidance_embeds)
        self.context_dim, self.pooled_dim = int(config.joint_attention_dim), int(config.pooled_projection_dim)

    def image_tokens(self, width: int, height: int) -> int:
        """Packed tokens of a width x height image (FluxPipeline's image_seq_len, which mu is linear in)."""
        side = 2 * self.vae_factor
        return (height // side) * (width // side)

    def conditioning(self, cond: Conditioning) -> dict[str, torch.Tensor]:
        """Tokens, pooled and (iff the transformer embeds one) guidance, checked against the transformer's widths."""
        if cond.embeddings.shape[-1] != self.context_dim or cond.pooled is None or \
                cond.pooled.shape[-1] != self.pooled_dim:
            pooled = None if cond.pooled is None else cond.pooled.shape[-1]
            raise NodeError(f"the conditioning has token width {cond.embeddings.shape[-1]} and pooled width {pooled}, "
                            f"but the transformer takes {self.context_dim} and {self.pooled_dim}: encode with this "
                            f"pipeline's text encoder")
        if self.guidance_embeds != ("guidance" in cond.extras):
            has = "has a guidance value" if "guidance" in cond.extras else "has no guidance value"
            raise NodeError(f"the conditioning {has}, but this transformer's guidance_embeds is "
                            f"{str(self.guidance_embeds).lower()}: encode with this pipeline's text encoder")
        tensors = {"context": cond.embeddings, "pooled": cond.pooled}
        if self.guidance_embeds:
            tensors["guidance"] = cond.extras["guidance"]
        return tensors


class FluxVae(KLVae):
    """Flux's AutoencoderKL (16 latent channels, shift_factor); image sides are multiples of 2 f (2x2 packing)."""

    @property
    def multiple(self) -> int:
        return 2 * self.factor
