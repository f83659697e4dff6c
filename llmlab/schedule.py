"""The learning-rate schedule: linear warm-up to ``max_lr``, then a cosine down to ``min_lr`` (GPT-2 / nanoGPT).

Conventions differ between courses: nanoGPT warms up as ``max_lr * (step + 1) / (warmup_iters + 1)`` (so step 0
already trains, at a small rate), Hugging Face's schedulers as ``max_lr * step / warmup_iters`` (step 0 at rate 0).
llmlab follows nanoGPT, so a value at a given step can differ from another course's by that one step.
"""

from __future__ import annotations

import math

from llmlab.config import TrainConfig

__all__ = ["lr_at"]


def lr_at(step: int, train: TrainConfig, time_fraction: float | None = None) -> float:
    """Learning rate at optimizer step ``step``: linear warmup to ``max_lr``, cosine decay to ``min_lr``.

    ``time_fraction`` (elapsed / max_seconds, when a wall-clock budget is set) lets the cosine finish
    when the time runs out even if ``max_iters`` would not be reached: progress is the larger of the two.
    """
    if step < train.warmup_iters:
        return train.max_lr * (step + 1) / (train.warmup_iters + 1)
    span = max(1, train.max_iters - train.warmup_iters)
    progress = (step - train.warmup_iters) / span
    if time_fraction is not None:
        progress = max(progress, time_fraction)
    progress = min(max(progress, 0.0), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return train.min_lr + cosine * (train.max_lr - train.min_lr)
