"""text.encode: prompts -> Conditioning through the pipeline's text encoder (CLIP for SD 1.x/2.x).

A prompt longer than the encoder's context (77 CLIP tokens, BOS and EOS included) is truncated, as
diffusers' encode_prompt does, and the lost text is reported as a NodeWarning event (and in the run
report's node entry); a cache hit does not repeat the warning."""
from __future__ import annotations

from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ...graph.errors import NodeError
from .types import Conditioning, EncodeOptions, TextEncoder


@node("text.encode")
class TextEncode(Node):
    """Token embeddings of a prompt from a CLIP text encoder (Radford et al. 2021), as Stable Diffusion conditions on them."""

    prompt: str = Field(description="the text ('' for the unconditional / empty negative prompt)")
    clip_skip: int = Field(0, ge=0, description="0 = the last layer; k = the output of layer -(k+1) through the "
                                                "final layer norm (diffusers' clip_skip; ComfyUI's last layer -(k+1))")
    original_size: tuple[int, int] | None = Field(None, description="SDXL: the (height, width) micro-conditioning "
                                                  "'original size' in pixels; None = the size of the latent being "
                                                  "sampled (as diffusers)")
    crop_top_left: tuple[int, int] = Field((0, 0), description="SDXL: the (top, left) crop micro-conditioning")
    target_size: tuple[int, int] | None = Field(None, description="SDXL: the (height, width) target size in pixels; "
                                                "None = the size of the latent being sampled")
    max_sequence_length: int | None = Field(None, ge=1, description="SD3 / Flux: T5 tokens per prompt; None = the "
                                            "family's default (SD3 256, Flux 512)")
    guidance: float | None = Field(None, description="Flux (guidance-distilled): the guidance embedding "
                                   "(FluxPipeline's guidance_scale); None = the family's default (3.5)")
    prompt_2: str | None = Field(None, description="the second text encoder's text, as diffusers' prompt_2 (a "
                                 "negative prompt's node: negative_prompt_2): SDXL's OpenCLIP-G (which gives the "
                                 "pooled output), SD3's CLIP-G, Flux's T5; None = the same as 'prompt'")
    prompt_3: str | None = Field(None, description="SD3: the T5 encoder's text (diffusers' prompt_3 / "
                                 "negative_prompt_3); None = the same as 'prompt'")
    aesthetic_score: float | None = Field(None, description="SDXL refiner (requires_aesthetics_score): the "
                                          "aesthetic-score time id; None = 6.0, diffusers' aesthetic_score; give "
                                          "the negative prompt's node 2.5, diffusers' negative_aesthetic_score")
    batch: int = Field(1, ge=1, description="rows of the conditioning (the same prompt repeated); 1 serves any "
                                            "latent batch")

    def run(self, text_encoder: TextEncoder, ctx: NodeContext) -> Conditioning:
        options = self.options()
        for name in options.set_beyond_defaults():
            if name not in text_encoder.options:
                raise NodeError(f"param {name!r} does not apply to a {text_encoder.label} text encoder; "
                                f"remove it (it is for the families that take it: see `samplegraph nodes text.encode`)")
        cond, lost = text_encoder.encode([self.prompt] * self.batch, options)
        if lost[0]:
            ctx.warn(f"the prompt is longer than the text encoder's {text_encoder.context} tokens and was "
                     f"truncated; lost: {lost[0]!r}")
        return cond

    def options(self) -> EncodeOptions:
        return EncodeOptions(**self.model_dump(exclude={"prompt", "batch"}))
