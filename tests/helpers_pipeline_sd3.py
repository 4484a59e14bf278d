"""A tiny random-weight Stable Diffusion 3 pipeline folder built offline (the shapes of diffusers' own
StableDiffusion3Pipeline fast tests, with two CLIPs of different widths so their order shows, 16 latent channels
and patch size 2 as in SD3): tokenizers from tests/helpers_pipeline (CLIP and T5 vocabularies written there)."""
from __future__ import annotations

from pathlib import Path

import torch

from helpers_pipeline import CONTEXT, VAE, load_tokenizer, save_t5_tokenizer, save_tokenizer

WIDTH = 32  # the transformer's joint_attention_dim = T5's d_model
TRANSFORMER = dict(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=1, attention_head_dim=8,
                   num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=WIDTH,
                   pooled_projection_dim=64)
SD3_VAE = {**VAE, "latent_channels": 16, "shift_factor": 0.0609, "scaling_factor": 1.5035, "use_quant_conv": False,
           "use_post_quant_conv": False}  # SD3's latent shift and scale
SHIFT = 3.0  # SD3's scheduler shift


def clip_encoder(vocab: int, hidden: int, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=37, num_attention_heads=2, num_hidden_layers=3,
        max_position_embeddings=CONTEXT, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=32)).eval()


def t5_encoder(vocab: int, seed: int):
    from transformers import T5Config, T5EncoderModel
    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=WIDTH, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0)).eval()


def build_sd3_pipeline(root: Path, seed: int = 0, t5: bool = True, t5_vocab: int | None = None) -> Path:
    """Save a tiny SD3 pipeline (transformer, 2 CLIPs + tokenizers, T5 + tokenizer unless t5=False, vae,
    FlowMatchEulerDiscreteScheduler with shift 3; safetensors) under `root`."""
    import diffusers
    from transformers import T5TokenizerFast
    size = save_tokenizer(root / "tokenizer")
    save_tokenizer(root / "tokenizer_2")
    torch.manual_seed(seed)
    transformer = diffusers.SD3Transformer2DModel(**TRANSFORMER).eval()
    vae = diffusers.AutoencoderKL(**SD3_VAE).eval()
    parts = dict(text_encoder=clip_encoder(size, 8, seed + 1), text_encoder_2=clip_encoder(size, 16, seed + 2),
                 tokenizer=load_tokenizer(root), tokenizer_2=load_tokenizer(root, "tokenizer_2"),
                 text_encoder_3=None, tokenizer_3=None)
    if t5:
        t5_size = save_t5_tokenizer(root / "tokenizer_3")
        parts.update(text_encoder_3=t5_encoder(t5_vocab or t5_size, seed + 3),
                     tokenizer_3=T5TokenizerFast.from_pretrained(root / "tokenizer_3", local_files_only=True))
    pipe = diffusers.StableDiffusion3Pipeline(transformer=transformer, vae=vae,
                                              scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=SHIFT), **parts)
    pipe.save_pretrained(root, safe_serialization=True)
    return root
