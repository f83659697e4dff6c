"""The learning-rate schedule: linear warm-up to ``max_lr``, then a cosine down to ``min_lr`` (GPT-2 / nanoGPT).

Conventions differ between courses. :func:`lr_at` computes, for optimizer step ``s`` (counted from 0):

- warm-up, ``s < warmup_iters``: ``max_lr * (s + 1) / (warmup_iters + 1)``, nanoGPT's formula: step 0 already
  trains, at ``max_lr / (warmup_iters + 1)``, and the last warm-up step is still below ``max_lr``;
- from ``s = warmup_iters`` on: ``min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2`` with
  ``p = (s - warmup_iters) / (max_iters - warmup_iters)``, so step ``warmup_iters`` is the first at ``max_lr`` and
  step ``max_iters`` is at ``min_lr`` (nanoGPT's decay, with its ``lr_decay_iters`` = ``max_iters``).

Hugging Face's ``get_cosine_schedule_with_warmup`` warms up as ``max_lr * s / warmup_iters`` instead: step 0 at
rate 0 (the first update changes nothing) and every warm-up step below llmlab's, until both reach ``max_lr`` at
``s = warmup_iters``. Its cosine is the same but ends at 0, not ``min_lr``. With
``warmup_iters=4, max_iters=10, max_lr=1, min_lr=0`` (measured with transformers 5): llmlab gives 0.2, 0.4, 0.6,
0.8, then 1.0, 0.933 ...; Hugging Face 0, 0.25, 0.5, 0.75, then the same 1.0, 0.933 ...

``schedule="wsd"`` (warm-up, stable, decay; Hägele et al., 2024) keeps ``max_lr`` after the warm-up and decays
linearly to ``min_lr`` over the last ``decay_fraction`` of the progress ``p`` only: a run spends most of its
budget at the full rate, and the decay still ends when the steps or the time run out.

With a wall-clock budget (``max_seconds > 0``) the Trainer passes ``time_fraction = elapsed / max_seconds`` and
the cosine follows the larger of the two progressions, so it reaches ``min_lr`` when the time runs out.
:func:`planned_lrs` draws that schedule ahead of a run from a speed in steps per second (for instance
:func:`measured_steps_per_second` of an earlier run of the same settings).
"""

from __future__ import annotations

import math
from typing import Any

from llmlab.config import TrainConfig
from llmlab.validate import check_number

__all__ = ["lr_at", "budget_step", "planned_lrs", "measured_steps_per_second"]


def lr_at(step: int, train: TrainConfig, time_fraction: float | None = None) -> float:
    """Learning rate at optimizer step ``step``: linear warmup to ``max_lr``, then a cosine (or, with
    ``schedule="wsd"``, a plateau and a linear decay) to ``min_lr``.

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
    if train.schedule == "wsd":  # stable at max_lr, then a straight line to min_lr over the last decay_fraction
        left = (1.0 - progress) / train.decay_fraction
        return train.min_lr + min(1.0, left) * (train.max_lr - train.min_lr)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return train.min_lr + cosine * (train.max_lr - train.min_lr)


def budget_step(train: TrainConfig, steps_per_second: float) -> int | None:
    """The step at which the Trainer stops on the time budget when it runs ``steps_per_second`` steps per second
    (evaluations included), or None without a budget (``max_seconds == 0``).

    The Trainer checks the clock before each step: at step ``s`` it has spent about ``s / steps_per_second``
    seconds, and it stops at the first ``s`` where ``s / (steps_per_second * max_seconds) >= 1``. A budget
    larger than ``max_iters`` needs gives a step beyond ``max_iters`` (the run stops at ``max_iters`` first).
    """
    sps = check_number("steps_per_second", steps_per_second, 0, low_open=True, fix="use a speed > 0, e.g. 10.0.")
    if train.max_seconds <= 0:
        return None
    span = sps * train.max_seconds  # steps the budget holds
    step = math.ceil(span)
    while step > 0 and (step - 1) / span >= 1.0:  # the same test as the Trainer's, in floating point
        step -= 1
    while step / span < 1.0:
        step += 1
    return step


def planned_lrs(train: TrainConfig, steps_per_second: float | None = None) -> list[float]:
    """The learning rate at steps ``0 .. stop`` as the Trainer will apply it; ``stop`` is where the run ends.

    Without a time budget (or without a speed to place it) this is ``lr_at(s, train)`` up to ``max_iters``.
    With ``max_seconds > 0`` and ``steps_per_second``, step ``s`` gets ``lr_at(s, train, time_fraction=s /
    (steps_per_second * max_seconds))`` and the list ends at the first step where the time is up (or at
    ``max_iters``, whichever comes first): the value there is ``min_lr``, the end of the cosine (the last step
    trained is the one before it).
    """
    stop = None if steps_per_second is None else budget_step(train, steps_per_second)
    if stop is None:
        return [lr_at(s, train) for s in range(train.max_iters + 1)]
    span = steps_per_second * train.max_seconds
    return [lr_at(s, train, time_fraction=s / span) for s in range(min(stop, train.max_iters) + 1)]


def measured_steps_per_second(result: Any) -> float:
    """Steps per second on the Trainer's clock (evaluations included) from a finished run's ``TrainResult``:
    the last evaluation's step over its ``elapsed`` seconds. Pass it to :func:`planned_lrs` for a run of the
    same settings on the same machine."""
    evals = [e for e in getattr(result, "evals", []) if e.step > 0 and e.elapsed > 0]
    if not evals:
        raise ValueError(
            "result has no evaluation after step 0 with a time: pass the TrainResult of a run that trained at "
            "least one step (Trainer(...).fit())."
        )
    return evals[-1].step / evals[-1].elapsed
