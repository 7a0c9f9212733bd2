"""Learning-rate schedule of the demo's component pretraining: linear warmup, cosine decay.

The curriculum stages use the training package's own schedules; this one only serves the
small loops in `pretrain_text` and `pretrain_vision`.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, floor: float = 0.0) -> float:
    """Multiplier of the peak learning rate at `step`: linear from 1/warmup to 1 over
    `warmup_steps`, then cosine down to `floor` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, floor: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler stepping `warmup_cosine_factor` once per optimizer step."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, floor)
    )
