"""latents nodes."""
