"""Device choice: `auto` picks CUDA when present, else CPU."""
from __future__ import annotations

import torch

from ..graph.errors import Problem, WorkflowError


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device; asking for absent CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise WorkflowError([Problem(f"unknown device '{device}': use auto, cpu, cuda or cuda:N")]) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WorkflowError([Problem("device 'cuda' was asked for, but no CUDA GPU is available here",
                                     hint="use --device auto or cpu")])
    return dev
