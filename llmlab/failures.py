"""How a training run that cannot go on stops, and what it tells the user (re-exported by :mod:`llmlab.callbacks`).

- :class:`TrainingError`: the loss diverged (:func:`diverged`, with :func:`divergence_advice` and
  :func:`nearest_preset` for a known-good learning rate) or memory ran out (:func:`oom_batch_size`: the smaller
  micro-batch an ``on_oom`` callback picks, see :func:`smaller_batch`, or the error)
- :class:`TrainingInterrupted`: Ctrl-C / SIGTERM (:func:`interrupted`, which saves the exact state between
  two steps)
- :func:`checkpoint_note`: what the last checkpoint holds, for any of these messages

The functions receive the trainer as a :class:`~llmlab.trainer_view.TrainerView` (this module sits below
:mod:`llmlab.train` and never imports it): they read its public attributes and never change them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from llmlab.checkpoint_state import LAST_NAME
from llmlab.i18n import tr
from llmlab.trainer_view import TrainerView

__all__ = [
    "TrainingError",
    "TrainingInterrupted",
    "smaller_batch",
    "nearest_preset",
    "divergence_advice",
    "diverged",
    "oom_batch_size",
    "interrupted",
    "checkpoint_note",
]


# --------------------------------------------------------------------------------------------------
# The errors


class TrainingError(RuntimeError):
    """Training cannot continue (loss diverged, out of memory); the message says what to change."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, or a KeyboardInterrupt from a callback) stopped training between two steps.

    ``step``: the steps taken; ``checkpoint``: the file that now holds exactly that state (None when
    nothing could be saved: before the first step, mid-step, or a second Ctrl-C); ``signal_name``:
    ``"SIGINT"`` / ``"SIGTERM"`` (None for a KeyboardInterrupt raised in Python).
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None, signal_name: str | None) -> None:
        super().__init__(message)
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name


def smaller_batch(batch_size: int) -> int:
    """The largest divisor of ``batch_size`` at most half of it (1 for 1).

    With ``grad_accum_steps`` multiplied by ``batch_size // smaller_batch(batch_size)``, a step sees the
    same number of sequences.
    """
    if batch_size <= 1:
        return 1
    return max(d for d in range(1, batch_size // 2 + 1) if batch_size % d == 0)


# --------------------------------------------------------------------------------------------------
# Advice for a failed run


def nearest_preset(model: Any) -> tuple[str, float]:
    """The preset whose model is closest in width and depth to ``model`` (a ModelConfig), and its max_lr."""
    from llmlab.config import PRESETS

    def distance(name: str) -> float:
        m = PRESETS[name]().model
        return abs(math.log(m.embedding_size / model.embedding_size)) + abs(math.log(m.depth / model.depth))

    name = min(PRESETS, key=distance)
    return name, PRESETS[name]().train.max_lr


def divergence_advice(config: Any, float16: bool) -> str:
    """What to change after a NaN / infinite loss: a known-good max_lr first (not a guess a third lower)."""
    tc = config.train
    preset, safe = nearest_preset(config.model)
    if tc.max_lr > safe * 1.001:
        lr = f"Lower max_lr (now {tc.max_lr:g}) to {preset}'s default {safe:g}, a safe choice: --set max_lr={safe:g}"
    else:
        lr = (
            f"max_lr={tc.max_lr:g} is already at or below {preset}'s default {safe:g}: try --set "
            f"max_lr={tc.max_lr / 3:.2g}"
        )
    clip = "" if tc.grad_clip > 0 else ", turn on gradient clipping (--set grad_clip=1.0)"
    fp16 = ", or use dtype=bfloat16 / float32 instead of float16" if float16 else ""
    return f"{lr}{clip}, lengthen warmup_iters (now {tc.warmup_iters}){fp16}."


def diverged(trainer: TrainerView, value: float, step: int, what: str, lr: float) -> TrainingError:
    """The error for a NaN / infinite loss: a setting that helps, and what the last checkpoint holds."""
    import torch

    advice = divergence_advice(trainer.config, trainer.dtype == torch.float16)
    kept = checkpoint_note(trainer)
    if trainer.saved_step is not None:
        kept += " Continue from it with --resume and the setting above, or start over with --overwrite."
    lead = tr("error.diverged", what=what, value=value, step=step, lr=f"{lr:.3g}")
    return TrainingError(f"{lead} {advice} {kept}")


def checkpoint_note(trainer: TrainerView) -> str:
    """What ``out_dir/last_checkpoint.bin`` holds, for a run that stopped early: this run's step N, or nothing."""
    last = trainer.out_dir / LAST_NAME
    if trainer.saved_step is not None and last.exists():
        return f"The last good checkpoint is this run's step {trainer.saved_step}, kept at {last}."
    every = trainer.config.train.eval_interval
    first = min((trainer.start_iter // every + 1) * every, trainer.config.train.max_iters)
    earlier = f" ({last} is from an earlier run)" if last.exists() else ""
    return f"No checkpoint from this run was written: the first comes at step {first}{earlier}."


def interrupted(trainer: TrainerView, signal_name: str | None) -> TrainingInterrupted:
    """Ctrl-C / SIGTERM (``signal_name``) or a KeyboardInterrupt: save the exact state where there is one
    (between two steps, asked once, agreed by every rank), and the exception that says what was kept."""
    step, last = trainer.safe_step, trainer.out_dir / LAST_NAME
    how = f" ({signal_name})" if signal_name else ""
    exact = step is not None and not trainer.signals.forced and (signal_name is not None or not trainer.dist.enabled)
    if exact and step and step != trainer.saved_step:
        trainer.save(step, is_best=False)
    if exact and step and trainer.saved_step == step:
        return TrainingInterrupted(
            tr("note.interrupted_saved", how=how, step=step, total=trainer.config.train.max_iters, path=last),
            step,
            last,
            signal_name,
        )
    why = "before the first step" if step == 0 else "in the middle of a step" if step is None else "at once"
    return TrainingInterrupted(
        f"interrupted{how} {why}: nothing new was saved. {checkpoint_note(trainer)}", step or 0, None, signal_name
    )


def oom_batch_size(trainer: TrainerView, answers: list[int | None]) -> int:
    """After a CUDA out-of-memory error: the micro-batch to go on with, the first that an ``on_oom`` callback
    chose (``answers``; checked), or :class:`TrainingError` saying what fits when none did."""
    import torch

    tc, mc = trainer.config.train, trainer.config.model
    b = tc.batch_size
    new = next((n for n in answers if n is not None), None)
    if new is None:
        smaller = smaller_batch(b)
        fit = (
            f"batch_size={smaller} grad_accum_steps={tc.grad_accum_steps * (b // smaller)}"
            if b > 1
            else f"block_size={max(1, mc.block_size // 2)}"
        )
        more = ("" if b > 1 else tr("error.oom.smaller_model")) + (
            tr("error.oom.bfloat16") if trainer.dtype == torch.float32 and trainer.device.type == "cuda" else ""
        )
        millions = f"{trainer.raw_model.num_parameters() / 1e6:.1f}"
        raise TrainingError(
            tr(
                "error.oom",
                device=trainer.device,
                batch_size=b,
                block_size=mc.block_size,
                accum=tc.grad_accum_steps,
                millions=millions,
                fit=fit,
                more=more,
            )
        )
    if isinstance(new, bool) or not isinstance(new, int) or not 1 <= new < b or b % new:
        raise ValueError(
            f"an on_oom callback returned batch size {new!r}: it must divide batch_size={b} and be smaller."
        )
    return new
