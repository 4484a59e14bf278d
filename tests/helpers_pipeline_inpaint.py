"""A tiny random-weight Stable Diffusion *inpainting* pipeline folder (StableDiffusionInpaintPipeline with a 9-channel
UNet: latents, mask, masked-image latents), built offline like helpers_pipeline.build_sd_pipeline."""
from __future__ import annotations

from pathlib import Path

import torch

from helpers_pipeline import SCHEDULER, UNET, VAE, load_tokenizer, save_tokenizer


def build_sd_inpaint_pipeline(root: Path, seed: int = 0) -> Path:
    """Save a tiny SD inpainting pipeline (unet with in_channels 9, text_encoder, tokenizer, vae, scheduler)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel
    size = save_tokenizer(root / "tokenizer")
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(**{**UNET, "in_channels": 9}).eval()
    vae = diffusers.AutoencoderKL(**VAE).eval()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=size, hidden_size=16, intermediate_size=37, num_attention_heads=2,
                                        num_hidden_layers=3, max_position_embeddings=77, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1, projection_dim=16)).eval()
    pipe = diffusers.StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text, tokenizer=load_tokenizer(root), unet=unet,
        scheduler=diffusers.EulerDiscreteScheduler(**SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(root, safe_serialization=True)
    return root
