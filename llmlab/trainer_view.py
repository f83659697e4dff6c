"""What code below :mod:`llmlab.train` may read of a running Trainer: one typed contract.

Callbacks (:mod:`llmlab.callbacks`), the messages of a failed run (:mod:`llmlab.failures`) and the GPU check
(:mod:`llmlab.doctor`) receive the trainer. They sit on lower floors than :mod:`llmlab.train` and cannot import
it, so they see it through :class:`TrainerView`: its public attributes, read-only by convention, and the two
methods a callback may call. The Trainer's state changes only inside :mod:`llmlab.train`
(``Trainer.load_state_dict``, the out-of-memory retry); tests/test_layering.py checks that no other module
touches a Trainer's private attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from llmlab.config import Config
    from llmlab.model import GPT
    from llmlab.runtime import DistInfo
    from llmlab.signals import StopSignals

__all__ = ["TrainerView"]


class TrainerView(Protocol):
    """A running :class:`llmlab.train.Trainer`, as its callbacks see it."""

    config: Config  # the run's settings (batch_size may shrink after an out-of-memory retry)
    device: torch.device
    dtype: torch.dtype  # the compute dtype of autocast (float32: none)
    compiled: bool
    out_dir: Path
    raw_model: GPT  # the model itself (not the compiled or DDP wrapper)
    optimizer: Any  # torch.optim.AdamW, or llmlab.muon.MuonWithAdamW
    train_batches: Any  # the training sampler (its state_dict() is the position in the stream)
    dist: DistInfo
    signals: StopSignals
    start_iter: int  # the step this run started from (> 0 when resumed)
    saved_step: int | None  # the step out_dir/last_checkpoint.bin holds from this run, if any
    safe_step: int | None  # the step the training state is exactly at (None: mid-step)
    flops_per_token: float
    result: Any  # llmlab.callbacks.TrainResult: the steps and evaluations so far

    def save(self, step: int, is_best: bool) -> None: ...

    def log(self, message: str) -> None: ...
