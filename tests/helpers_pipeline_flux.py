"""A tiny random-weight Flux pipeline folder built offline: FluxTransformer2DModel, CLIPTextModel (pooled),
T5EncoderModel (tokens), their tokenizers (tests/helpers_pipeline), an AutoencoderKL with Flux's shift_factor and a
FlowMatchEulerDiscreteScheduler with Flux.1-dev's dynamic shifting. The transformer's sizes are those of diffusers'
own FluxPipeline fast tests (heads 2 x 16, rope axes 4/4/8, one double and one single block); the VAE has two levels
(factor 2) and 4 latent channels, so packing 2x2 patches gives 16 channels and sides must be multiples of 4."""
from __future__ import annotations

from pathlib import Path

import torch

from helpers_pipeline import CONTEXT, load_tokenizer, save_t5_tokenizer, save_tokenizer

WIDTH = 32  # CLIP and T5 hidden size; the transformer's joint_attention_dim and pooled_projection_dim
TRANSFORMER = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                   num_attention_heads=2, joint_attention_dim=WIDTH, pooled_projection_dim=WIDTH,
                   axes_dims_rope=(4, 4, 8))
VAE = dict(in_channels=3, out_channels=3, block_out_channels=(4, 4), layers_per_block=1, latent_channels=4,
           norm_num_groups=2, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
           use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
# FLUX.1-dev's scheduler_config.json
SCHEDULER = dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
                 num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)


def build_flux_pipeline(root: Path, seed: int = 0, guidance_embeds: bool = True, t5_vocab: int | None = None) -> Path:
    """Save a tiny Flux pipeline (safetensors) under `root`; guidance_embeds False is a FLUX.1-schnell-like one."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast
    clip_size = save_tokenizer(root / "tokenizer")
    t5_size = save_t5_tokenizer(root / "tokenizer_2")
    torch.manual_seed(seed)
    transformer = diffusers.FluxTransformer2DModel(**TRANSFORMER, guidance_embeds=guidance_embeds).eval()
    vae = diffusers.AutoencoderKL(**VAE).eval()
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=clip_size, hidden_size=WIDTH, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=CONTEXT,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=WIDTH)).eval()
    t5 = T5EncoderModel(T5Config(vocab_size=t5_vocab or t5_size, d_model=WIDTH, d_kv=8, d_ff=37, num_layers=2,
                                 num_heads=4, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0)).eval()
    pipe = diffusers.FluxPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae,
                                  text_encoder=clip, tokenizer=load_tokenizer(root), text_encoder_2=t5,
                                  tokenizer_2=T5TokenizerFast.from_pretrained(root / "tokenizer_2",
                                                                              local_files_only=True),
                                  transformer=transformer)
    pipe.save_pretrained(root, safe_serialization=True)
    return root
