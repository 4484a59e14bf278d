"""Small denoiser network architectures, built from a config dict, with weights from plain
safetensors state dicts (never pickle)."""
