"""Safetensors checkpoints of the small networks (never pickle): the state dict in float32 with the
architecture config as JSON in the metadata under "config", so a file is self-describing; a user's
plain state dict may instead come with the config given separately.

Every network kind (the MLP denoiser, the digits classifiers) saves and loads through these two
functions, so each failure is the same NodeError naming the file and what is wrong (missing,
unreadable, bad config, missing/unexpected keys, mismatched shapes)."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ....graph.errors import NodeError
from ...core.tensorfile import safetensors_bytes

C = TypeVar("C", bound=BaseModel)
M = TypeVar("M", bound=torch.nn.Module)


def save_network(net: torch.nn.Module, config: BaseModel, path: str | Path,
                 extra: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write the state dict (in `dtype`; loaders cast to the network's) with `config` (and `extra`) as JSON metadata."""
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in net.state_dict().items()}
    meta = {"config": config.model_dump_json()}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    Path(path).write_bytes(safetensors_bytes(tensors, meta))
    return Path(path)


def load_network(path: str | Path, config: dict[str, Any] | None, schema: type[C], build: Callable[[C], M],
                 example: str) -> M:
    """build(config) (eval mode, no gradients) with the file's weights; `config` overrides the file's own.

    `example` is a config JSON shown when the file has none."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise NodeError(f"model file '{p}' does not exist; give the path of a .safetensors state dict")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise NodeError(f"model file '{p}' is not a readable safetensors file ({e})") from None
    raw = config if config is not None else _config_of(meta, p, example)
    try:
        cfg = schema.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise NodeError(f"bad architecture config for '{p}': {problems}") from None
    net = build(cfg)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k} {tuple(tensors[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"missing keys {missing[:5]}" if missing else "", f"unexpected keys {unexpected[:5]}" if unexpected
                 else "", f"wrong shapes {wrong[:5]}" if wrong else ""]
        raise NodeError(f"model file '{p}' does not match the config {cfg.model_dump()}: "
                        f"{'; '.join(x for x in parts if x)}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return net.eval().requires_grad_(False)


def _config_of(meta: dict[str, str], path: Path, example: str) -> dict[str, Any]:
    """The JSON config in the file's metadata (NodeError when absent or not JSON)."""
    if "config" not in meta:
        raise NodeError(f"model file '{path}' has no 'config' in its metadata; pass the architecture 'config' "
                        f"parameter (e.g. {example})")
    try:
        return json.loads(meta["config"])
    except json.JSONDecodeError as e:
        raise NodeError(f"model file '{path}': its metadata 'config' is not JSON ({e})") from None


def round_weights(net: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The net with its weights rounded to dtype and back in place: what loading it saved in dtype gives."""
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.to(dtype).to(p.dtype))
    return net
