"""What the training loop reports, and the observers that act on it (minGPT's "one trainer, many callbacks").

- :class:`StepInfo`, :class:`EvalInfo`, :class:`TrainResult`  the records :class:`llmlab.train.Trainer` produces
- :class:`Callback`  the hooks the loop calls, in order::

      on_train_start
      for every optimizer step:  on_step_start -> (the step) -> on_step_timed
                                 on_step_end (every log_interval steps, with loss / lr / tokens/s)
                                 on_eval (every eval_interval steps and at the stop)
                                 on_oom (a CUDA out-of-memory error: may return a smaller micro-batch)
                                 on_message (hints, warnings)
      on_train_end  (or on_train_abort on an exception)

- :class:`ProgressBar` (the CLI), :class:`MetricsLogger` (csv / jsonl rows)
- machine-specific heuristics, each opt-in (the Trainer's keyword arguments add them):
  :class:`ThreadTuner` (``cpu_threads="auto"``), :class:`StuckHint` (``stuck_patience``),
  :class:`OOMRetry` (``oom_retry``)
- how a run that cannot go on stops, and what it says, lives in :mod:`llmlab.failures` and is re-exported
  here: :class:`TrainingError` (:func:`diverged`, :func:`recover_from_oom`), :class:`TrainingInterrupted`
  (:func:`interrupted`: Ctrl-C / SIGTERM, with the exact state saved)

Callbacks receive the trainer itself (typed ``Any``: this module sits below :mod:`llmlab.train` and never
imports it) and may read its attributes: ``config``, ``start_iter``, ``device``, ``dist``, ``result``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmlab.failures import (
    smaller_batch,
)
from llmlab.trainer_view import TrainerView

__all__ = [
    "StepInfo",
    "EvalInfo",
    "TrainResult",
    "Callback",
    "ProgressBar",
    "MetricsLogger",
    "ThreadTuner",
    "StuckHint",
    "OOMRetry",
]


# --------------------------------------------------------------------------------------------------
# Records


@dataclass
class StepInfo:
    """Reported every ``log_interval`` optimizer steps. ``loss`` is the mean over the step's micro-batches."""

    step: int
    loss: float
    lr: float
    tokens_per_sec: float
    mfu: float | None = None
    elapsed: float = 0.0


@dataclass
class EvalInfo:
    """Reported at every evaluation (step 0, every ``eval_interval`` steps, and the end)."""

    step: int
    train_loss: float
    val_loss: float
    val_bpb: float
    is_best: bool = False
    elapsed: float = 0.0


@dataclass
class TrainResult:
    """What :meth:`llmlab.train.Trainer.fit` returns (a resumed run's includes the earlier steps)."""

    steps: list[StepInfo] = field(default_factory=list)
    evals: list[EvalInfo] = field(default_factory=list)
    best_val_loss: float = float("inf")
    best_val_bpb: float = float("inf")
    final_step: int = 0
    seconds: float = 0.0
    tokens_per_sec: float = 0.0  # median over the logged windows
    stop_reason: str = ""
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def train_losses(self) -> list[tuple[int, float]]:
        return [(s.step, s.loss) for s in self.steps]

    @property
    def val_losses(self) -> list[tuple[int, float]]:
        return [(e.step, e.val_loss) for e in self.evals]

    @property
    def val_bpb(self) -> list[tuple[int, float]]:
        return [(e.step, e.val_bpb) for e in self.evals]


# --------------------------------------------------------------------------------------------------
# The hooks


class Callback:
    """Override any of these. They run on the main process only (rank 0 under torchrun), unless the
    subclass sets ``all_ranks = True`` (for per-process tuning such as :class:`ThreadTuner`).
    """

    all_ranks: bool = False

    def on_train_start(self, trainer: TrainerView) -> None:
        """Before the first step (after the trainer restored a resumed run)."""

    def on_step_start(self, trainer: TrainerView, step: int) -> None:
        """Before every optimizer step; ``step`` counts the steps already taken."""

    def on_step_timed(self, trainer: TrainerView, step: int, seconds: float) -> None:
        """After every optimizer step: its host wall time (on a GPU the kernels may still be running)."""

    def on_step_end(self, trainer: TrainerView, info: StepInfo) -> None:
        """Every ``log_interval`` steps: loss, learning rate, throughput."""

    def on_eval(self, trainer: TrainerView, info: EvalInfo) -> None:
        """After each evaluation (and its checkpoint)."""

    def on_oom(self, trainer: TrainerView, error: BaseException) -> int | None:
        """A CUDA out-of-memory error: return a smaller micro-batch (a divisor of the current one) to retry."""
        return None

    def on_message(self, trainer: TrainerView, message: str) -> None:
        """A message for the user (device, hints, warnings)."""

    def on_train_end(self, trainer: TrainerView, result: TrainResult) -> None:
        """After the final evaluation and checkpoint."""

    def on_train_abort(self, trainer: TrainerView, error: BaseException) -> None:
        """Training stopped with an exception (including KeyboardInterrupt); it is re-raised afterwards."""


# --------------------------------------------------------------------------------------------------
# Reporting


class ProgressBar(Callback):
    """A tqdm bar over optimizer steps with loss, lr and tokens/s; evaluation lines printed above it."""

    def __init__(self, file: Any = None) -> None:
        self.file = file
        self.bar: Any = None

    def on_step_start(self, trainer: TrainerView, step: int) -> None:
        # The bar starts with the first step, after the evaluation at the start: its rate and ETA count steps
        # only (the step-0 evaluation once made the first ETA read 1:15:45 for a ten-minute run).
        if self.bar is not None:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=trainer.config.train.max_iters,
            initial=step,
            unit="step",
            dynamic_ncols=True,
            file=self.file or sys.stderr,
        )

    def on_step_end(self, trainer: TrainerView, info: StepInfo) -> None:
        if self.bar is None:
            return
        post = {"loss": f"{info.loss:.4f}", "lr": f"{info.lr:.2e}", "tok/s": f"{info.tokens_per_sec:,.0f}"}
        if info.mfu is not None:
            post["mfu"] = f"{100 * info.mfu:.1f}%"
        self.bar.set_postfix(post, refresh=False)  # shown by the update below
        self.bar.update(info.step - self.bar.n)

    def on_eval(self, trainer: TrainerView, info: EvalInfo) -> None:
        best = "  (best)" if info.is_best else ""
        self.on_message(
            trainer,
            f"step {info.step}: train {info.train_loss:.4f}, val {info.val_loss:.4f} "
            f"nats/token, val {info.val_bpb:.3f} bits/byte{best}",
        )

    def on_message(self, trainer: TrainerView, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.file or sys.stderr)
        else:
            print(message, file=self.file or sys.stderr)

    def on_train_end(self, trainer: TrainerView, result: TrainResult) -> None:
        self._close()

    def on_train_abort(self, trainer: TrainerView, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLogger(Callback):
    """Appends one row per logged step and per evaluation to a ``.csv`` or ``.jsonl`` file.

    On resume, rows after the resumed step (written by the interrupted run) are dropped first, so the
    file always describes one consistent run.
    """

    COLUMNS = ("kind", "step", "loss", "lr", "tokens_per_sec", "mfu", "train_loss", "val_loss", "val_bpb", "elapsed")

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.suffix not in (".csv", ".jsonl"):
            raise ValueError(f"metrics file {self.path} must end in .csv or .jsonl.")
        self._file: Any = None
        self._csv: Any = None

    def on_train_start(self, trainer: TrainerView) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = (
            [r for r in self.read(self.path) if int(r["step"]) <= trainer.start_iter]
            if (trainer.start_iter > 0 and self.path.exists())
            else []
        )
        # Line buffering: a row is on disk as soon as it is written (other processes may watch the file).
        self._file = open(self.path, "w", buffering=1, newline="")
        if self.path.suffix == ".csv":
            self._csv = csv.DictWriter(self._file, fieldnames=self.COLUMNS)
            self._csv.writeheader()
        for row in kept:
            self._write(row)

    def _write(self, row: dict[str, Any]) -> None:
        row = {k: row.get(k) for k in self.COLUMNS}
        if self._csv is not None:
            self._csv.writerow({k: ("" if v is None else v) for k, v in row.items()})
        else:
            self._file.write(json.dumps(row) + "\n")

    def on_step_end(self, trainer: TrainerView, info: StepInfo) -> None:
        self._write({"kind": "step", **dataclasses.asdict(info)})

    def on_eval(self, trainer: TrainerView, info: EvalInfo) -> None:
        self._write({"kind": "eval", **{k: v for k, v in dataclasses.asdict(info).items() if k != "is_best"}})

    def on_train_end(self, trainer: TrainerView, result: TrainResult) -> None:
        self._close()

    def on_train_abort(self, trainer: TrainerView, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._csv = None

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict[str, Any]]:
        """Rows of a metrics file as dicts (numbers as float, empty cells as None)."""
        path = Path(path)
        rows: list[dict[str, Any]] = []
        with open(path, newline="") as f:
            if path.suffix == ".jsonl":
                rows = [json.loads(line) for line in f if line.strip()]
            else:
                for r in csv.DictReader(f):
                    row = {k: (v if k == "kind" else (float(v) if v not in ("", None) else None)) for k, v in r.items()}
                    if row.get("step") is not None:
                        row["step"] = int(row["step"])  # steps stay whole numbers when a resumed file is rewritten
                    rows.append(row)
        return rows


# --------------------------------------------------------------------------------------------------
# Machine-specific heuristics (opt-in)


class ThreadTuner(Callback):
    """On CPU, switches between all threads and one thread, whichever makes steps faster right now.

    When other processes keep a core busy, every parallel region of a multi-threaded step waits for a
    descheduled thread: on the 2-core course machine this made steps up to 10x slower than with one
    thread. On an idle machine all threads win. So: time the steps, and every ``period`` steps try the
    other setting for ``probe`` steps; keep it if it is at least 10% faster. A probe costs time when it
    loses, so it stops after one step that is clearly slower (1.5x), and after each lost probe the wait
    until the next one doubles (up to 16 periods; a won probe resets it): on an idle machine the probes
    then cost well under 1% of the steps instead of ~5%. ``max_threads=None`` takes torch's thread count
    when training starts. Does nothing on a GPU or with one thread. (The trainer restores the thread
    count when ``fit`` returns.)
    """

    all_ranks = True  # every process tunes its own threads

    def __init__(self, max_threads: int | None = None, period: int = 50, probe: int = 3) -> None:
        self.max_threads, self.period, self.probe = max_threads, period, probe
        self.enabled = True
        self._reset(max_threads or torch.get_num_threads())

    def _reset(self, max_threads: int) -> None:
        self.options = (max_threads, 1)
        self.current = max_threads
        self.recent: list[float] = []  # step times with the current setting
        self.trial: list[float] = []
        self.trying: int | None = None
        self.wait = self.period  # steps from one probe to the next
        self.next_probe = 10  # the first look comes early: a busy machine should not cost a whole period

    def on_train_start(self, trainer: TrainerView) -> None:
        threads = self.max_threads or torch.get_num_threads()
        self.enabled = trainer.device.type == "cpu" and threads > 1
        if self.enabled and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self._reset(threads)

    def on_step_start(self, trainer: TrainerView, step: int) -> None:
        if self.enabled:
            self.before_step()

    def on_step_timed(self, trainer: TrainerView, step: int, seconds: float) -> None:
        if self.enabled:
            self.after_step(seconds)

    def before_step(self) -> None:
        """Start a probe of the other setting when one is due."""
        if self.trying is None and len(self.recent) >= self.next_probe:
            self.trying = self.options[1] if self.current == self.options[0] else self.options[0]
            self.trial = []
            torch.set_num_threads(self.trying)

    def after_step(self, seconds: float) -> None:
        """Record a step time; at the end of a probe keep the faster setting."""
        if self.trying is None:
            self.recent.append(seconds)
            return
        self.trial.append(seconds)
        baseline = statistics.median(self.recent[-3 * self.probe :])
        lost_already = seconds > 1.5 * baseline
        if len(self.trial) < self.probe and not lost_already:
            return
        if not lost_already and statistics.median(self.trial) < 0.9 * baseline:
            self.current, self.recent = self.trying, list(self.trial)
            self.wait = self.period
        else:
            torch.set_num_threads(self.current)
            self.recent = self.recent[-3 * self.probe :]
            self.wait = min(2 * self.wait, 16 * self.period)
        self.trying = None
        self.next_probe = len(self.recent) + self.wait


class StuckHint(Callback):
    """One hint per run when validation loss has stopped improving for a reason worth acting on.

    The gate: the last ``patience`` evaluations improved on the best before them by less than 0.5%. Then
    only two curves get a hint:

    - **risen from its best**: the model learned (val fell at least 0.5% below the first evaluation) and
      the last evaluation is above the best by more than ``rise`` (relative, 1% by default). If train loss
      still falls since the best evaluation the model is **overfitting**; if it does not, ``max_lr`` is
      the suspect.
    - **never improved**: val is flat, or rising, from the first evaluation on: a bad ``max_lr`` (too high
      and too low both stall) or a model too small.

    A curve that still improves, however slowly, or that levels off at its best, gets no hint: the best
    checkpoint is still the latest one worth keeping. Reads every evaluation of the run (a resumed run's
    earlier ones too) from ``trainer.result.evals``.
    """

    MIN_GAIN = 0.005  # an improvement smaller than 0.5% counts as none

    def __init__(self, patience: int = 3, rise: float = 0.01) -> None:
        self.patience = patience
        self.rise = rise
        self.hinted = False

    def on_train_start(self, trainer: TrainerView) -> None:
        self.hinted = False

    def on_eval(self, trainer: TrainerView, info: EvalInfo) -> None:
        p, evals = self.patience, trainer.result.evals
        if p <= 0 or self.hinted or len(evals) < p + 2:
            return
        hint = self.hint(evals, trainer.config)
        if hint:
            self.hinted = True
            trainer.log(hint)

    def hint(self, evals: list[EvalInfo], config: Any) -> str:
        """The hint these evaluations call for under ``config`` (a :class:`llmlab.config.Config`), or ``""``."""
        p = self.patience
        vals = [e.val_loss for e in evals]
        before, recent = min(vals[:-p]), min(vals[-p:])
        if recent < before * (1 - self.MIN_GAIN):  # still improving by 0.5% or more: nothing to say
            return ""
        best_i = vals.index(min(vals))
        best, first, last = evals[best_i], evals[0], evals[-1]
        learned = best.val_loss < first.val_loss * (1 - self.MIN_GAIN)
        risen = last.val_loss > best.val_loss * (1 + self.rise)
        if learned and not risen:
            return ""  # improving slowly, or level at its best: neither overfitting nor a bad rate
        tc, mc = config.train, config.model
        head = f"hint: val loss improved by less than 0.5% over the last {p} evaluations"
        if not learned:
            trend = "rose" if risen else "stayed flat"
            advice = (
                f"try a lower max_lr (now {tc.max_lr:g})"
                if risen
                else f"try a different max_lr (now {tc.max_lr:g}; too high and too low both stall)"
            )
            return (
                f"{head}, and it {trend} from the first evaluation ({first.val_loss:.4f} at step {first.step}, "
                f"{last.val_loss:.4f} at step {last.step}): the model is not learning. {advice}, or a bigger "
                f"model (embedding_size={mc.embedding_size}, depth={mc.depth})."
            )
        rose = (
            f"{head}, and it has risen from its best {best.val_loss:.4f} (step {best.step}) to {last.val_loss:.4f} "
            f"(step {last.step})"
        )
        if last.train_loss < best.train_loss * 0.99:
            return (
                f"{rose} while train loss still falls ({best.train_loss:.4f} -> {last.train_loss:.4f}): the model "
                f"is overfitting. Stop here (the best checkpoint, step {best.step}, is kept), add dropout (now "
                f"{mc.dropout}) or weight decay (now {tc.weight_decay:g}), or train on more data."
            )
        return (
            f"{rose}, and train loss has stopped falling too: a sign of updates too large to settle; try a lower "
            f"max_lr (now {tc.max_lr:g})."
        )


class OOMRetry(Callback):
    """After a CUDA out-of-memory error, retry with a smaller micro-batch (the trainer doubles accumulation).

    Declines (the trainer then stops with advice) at batch size 1 and under DDP, where a retry on one
    rank alone would leave the others waiting for it.
    """

    def on_oom(self, trainer: TrainerView, error: BaseException) -> int | None:
        b = trainer.config.train.batch_size
        if b <= 1 or trainer.dist.enabled:
            return None
        return smaller_batch(b)
