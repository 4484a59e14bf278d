"""The time-and-class conditioning vector that the repo's denoisers share (EDM's noise and class
embeddings, Karras et al. 2022; a null class for classifier-free guidance, Ho & Salimans 2022).

A network holds `freqs` (E/2,) sinusoid frequencies, `time` (an MLP E -> E), `label` (an
Embedding of classes + 1 rows, the last one the null class, or None) and `config.classes`; these
two functions read them, so MLPDenoiser and DiT condition the same way."""
from __future__ import annotations

import math

import torch


def time_class_embedding(net: torch.nn.Module, t: torch.Tensor, label: int | torch.Tensor | None,
                         b: int, dtype: torch.dtype) -> torch.Tensor:
    """The conditioning e (B, E) at network time t (B,) for `label` (None = null class; an int tensor (B,) of
    labels, or a float tensor (B, E) of class embeddings added as they are, as guidance.cads gives)."""
    angles = t.to(dtype)[:, None] * net.freqs.to(dtype)  # (B, E/2)
    e = net.time(torch.cat([angles.cos(), angles.sin()], dim=1))  # (B, E)
    if net.label is not None and isinstance(label, torch.Tensor) and label.is_floating_point():
        e = e + label.to(dtype)  # (B, E)
    elif net.label is not None:
        null = net.config.classes
        labels = torch.full((b,), null if label is None else label, device=t.device) \
            if label is None or isinstance(label, int) else label.to(t.device)  # (B,)
        e = e + net.label(labels.long()).to(dtype)  # (B, E)
    return e


def class_embedding_row(net: torch.nn.Module, label: int | None) -> torch.Tensor:
    """The embedding (E,) the network adds for `label` (None: the null class)."""
    if net.label is None:
        raise ValueError("this network has no class input (config classes = 0)")
    return net.label.weight[net.config.classes if label is None else label].detach()  # (E,)


def time_frequencies(width: int) -> torch.Tensor:
    """(width/2,) sinusoid frequencies 1..100 (log-spaced) for the network time (about -2..1.5 for EDM's ln(sigma)/4)."""
    return torch.exp(torch.linspace(0.0, math.log(100.0), width // 2))


def add_time_class_layers(net: torch.nn.Module, width: int, classes: int) -> None:
    """Give `net` the layers the functions above read: `freqs` (a buffer), `time` (MLP width -> width) and
    `label` (classes + 1 rows, or None without classes), created in this order (the init draws follow it)."""
    net.register_buffer("freqs", time_frequencies(width), persistent=False)
    net.time = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, width))
    net.label = torch.nn.Embedding(classes + 1, width) if classes else None
