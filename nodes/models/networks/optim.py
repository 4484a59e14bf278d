"""The optimiser the repo's training scripts share: AdamW with a linear warm-up then cosine decay to 0."""
from __future__ import annotations

import math

import torch


def warmup_cosine_adamw(net: torch.nn.Module, lr: float, steps: int, warmup: int,
                        ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (weight decay 0.01, betas 0.9 / 0.98) and its schedule: lr * min((i + 1) / w, cos decay),
    w = min(warmup, max(1, steps // 10)); step the scheduler once per optimiser step."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = min(warmup, max(1, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / warm, 0.5 * (1 + math.cos(math.pi * i / steps))))
    return opt, sched
