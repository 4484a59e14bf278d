"""A tiny random-weight SDXL pipeline folder built offline from small configs (the shapes of diffusers' own
StableDiffusionXLPipeline fast tests, with two encoders of different widths so that their concatenation and
the pooled projection are visible), with the character-vocabulary CLIP tokenizers of helpers_pipeline."""
from __future__ import annotations

from pathlib import Path

import torch

from helpers_pipeline import CONTEXT, SCHEDULER, UNET, VAE, save_tokenizer

WIDTHS, POOLED, TIME_DIM = (16, 24), 20, 8  # CLIP-L-like and CLIP-G-like hidden sizes; G's projection_dim
SDXL_UNET = {**UNET, "cross_attention_dim": sum(WIDTHS), "addition_embed_type": "text_time",
             "addition_time_embed_dim": TIME_DIM, "projection_class_embeddings_input_dim": 6 * TIME_DIM + POOLED,
             "use_linear_projection": True, "transformer_layers_per_block": (1, 2), "attention_head_dim": (2, 4)}
# SDXL base's scheduler: Euler on 'leading' timesteps
SDXL_SCHEDULER = {**SCHEDULER, "timestep_spacing": "leading"}


def clip_config(vocab_size: int, width: int) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=37, num_attention_heads=2,
                num_hidden_layers=3, max_position_embeddings=CONTEXT, bos_token_id=0, eos_token_id=1, pad_token_id=1,
                projection_dim=POOLED)


# a refiner's UNet: OpenCLIP-G's tokens alone, and 5 time ids (original size, crop, aesthetic score)
REFINER_UNET = {**SDXL_UNET, "cross_attention_dim": WIDTHS[1],
                "projection_class_embeddings_input_dim": 5 * TIME_DIM + POOLED}


def build_sdxl_pipeline(root: Path, seed: int = 0, vocab_size_2: int | None = None,
                        pipeline: str = "StableDiffusionXLPipeline", refiner: bool = False, **config) -> Path:
    """Save a tiny SDXL pipeline (unet, text_encoder(_2), tokenizer(_2), vae, scheduler; safetensors) under `root`;
    `config` goes to the pipeline's constructor (force_zeros_for_empty_prompt, requires_aesthetics_score);
    `refiner`: text_encoder_2 and tokenizer_2 alone, REFINER_UNET (build_sdxl_refiner)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    names = ("tokenizer_2",) if refiner else ("tokenizer", "tokenizer_2")
    sizes = [save_tokenizer(root / name) for name in names]
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(**(REFINER_UNET if refiner else SDXL_UNET)).eval()
    vae = diffusers.AutoencoderKL(**VAE).eval()
    text = None if refiner else CLIPTextModel(CLIPTextConfig(**clip_config(sizes[0], WIDTHS[0]))).eval()
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**clip_config(vocab_size_2 or sizes[-1], WIDTHS[1]))).eval()
    tokenizers = [CLIPTokenizer.from_pretrained(root / name, local_files_only=True) for name in names]
    pipe = getattr(diffusers, pipeline)(vae=vae, text_encoder=text, text_encoder_2=text_2,
                                        tokenizer=None if refiner else tokenizers[0], tokenizer_2=tokenizers[-1],
                                        unet=unet, scheduler=diffusers.EulerDiscreteScheduler(**SDXL_SCHEDULER),
                                        add_watermarker=False, **config)
    pipe.save_pretrained(root, safe_serialization=True)
    return root


def build_sdxl_refiner(root: Path, seed: int = 1) -> Path:
    """A tiny SDXL refiner folder as stabilityai's: StableDiffusionXLImg2ImgPipeline, requires_aesthetics_score true,
    force_zeros_for_empty_prompt false, text_encoder and tokenizer null, a UNet with 5 time ids."""
    return build_sdxl_pipeline(root, seed, pipeline="StableDiffusionXLImg2ImgPipeline", refiner=True,
                               requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
