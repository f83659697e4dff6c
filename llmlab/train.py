"""The training loop: one :class:`Trainer` for notebooks (live plots) and the command line (progress bar).

:meth:`Trainer.fit` is nanoGPT's loop, top to bottom: schedule -> step -> evaluate -> checkpoint -> log.
What one optimizer step does (:meth:`Trainer.train_step`)::

    for micro in range(grad_accum_steps):          # gradient accumulation
        x, y = batches.next()                      # (B, T) int64 windows of the token memmap
        with autocast:  _, loss = model(x, y)      # bf16/fp16 on CUDA, fp32 on CPU
        (loss / grad_accum_steps).backward()       # DDP syncs gradients only on the last micro-step
    clip_grad_norm_(params, grad_clip); optimizer.step(); optimizer.zero_grad(set_to_none=True)

The learning rate follows :func:`lr_at` (linear warmup, then cosine down to ``min_lr``). Every
``eval_interval`` steps the model is evaluated on fixed train/val batches, the loss is converted to
bits per byte (comparable across char, BPE and GPT-2 tokenizers) and ``last_checkpoint.bin`` /
``best_checkpoint.bin`` are written through :mod:`llmlab.checkpoint`.

The rest lives beside the loop: the machine (device, dtype, compile, DDP, peak FLOPs) in
:mod:`llmlab.runtime`; the reports and the per-machine heuristics (CPU thread tuning, out-of-memory
retry, the "loss is stuck" hint) as :class:`Callback` objects in :mod:`llmlab.callbacks`. Under
``torchrun`` the same loop runs distributed (DDP): each process trains on its own stream of batches,
gradients are averaged across processes once per optimizer step, and only rank 0 logs and writes
checkpoints::

    torchrun --standalone --nproc_per_node=8 -m llmlab train --preset gpt2_124m --data data/openwebtext_gpt2
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llmlab import callbacks as helpers  # the opt-in heuristics: ThreadTuner, OOMRetry, StuckHint
from llmlab import runtime
from llmlab.callbacks import Callback, EvalInfo, MetricsLogger, ProgressBar, StepInfo, TrainResult
from llmlab.checkpoint import BEST_NAME, LAST_NAME, TrainingState, load_model_state, load_resume_state, save_checkpoint
from llmlab.config import Config, TrainConfig
from llmlab.metrics import bits_per_byte
from llmlab.runtime import OutOfMemoryError, explain_device, peak_flops_for, select_device, select_dtype, should_compile

# The public names, including those re-exported from callbacks / runtime / metrics for older imports.
__all__ = [
    "lr_at",
    "Trainer",
    "TrainingError",
    "Callback",
    "StepInfo",
    "EvalInfo",
    "TrainResult",
    "ProgressBar",
    "MetricsLogger",
    "select_device",
    "explain_device",
    "select_dtype",
    "should_compile",
    "peak_flops_for",
    "bits_per_byte",
]


class TrainingError(RuntimeError):
    """Training cannot continue (loss diverged, out of memory); the message says what to change."""


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


class Trainer:
    """Trains a GPT on a prepared data directory and writes checkpoints to ``out_dir``.

    ``Trainer(config, data_dir, out_dir, callbacks=[ProgressBar()]).fit()`` is the whole API; the model,
    optimizer and tokenizer are attributes for notebooks to inspect. ``resume=True`` continues from
    ``out_dir/last_checkpoint.bin`` (the model settings must match it; training settings may change);
    a :class:`~llmlab.checkpoint.TrainingState` already loaded (the CLI's) is used as is.

    The keyword arguments switch on the machine-specific helpers from :mod:`llmlab.callbacks` (on by
    default, as the notebooks and the CLI expect): ``cpu_threads="auto"`` adds a :class:`ThreadTuner`
    (on CPU, switches between all threads and one by measured step time); a number fixes the count
    instead (bit-exact reruns need a fixed count, e.g. OMP_NUM_THREADS=1). ``oom_retry`` adds
    :class:`OOMRetry` (halve the micro-batch, double ``grad_accum_steps`` after a CUDA out-of-memory
    error: same sequences per step). ``stuck_patience`` > 0 adds :class:`StuckHint`.
    """

    def __init__(
        self,
        config: Config,
        data_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        callbacks: Sequence[Callback] = (),
        resume: bool | TrainingState = False,
        oom_retry: bool = True,
        stuck_patience: int = 3,
        cpu_threads: int | str = "auto",
    ) -> None:
        from llmlab import data as data_mod  # lazily: `import llmlab.train` stays light for the widgets
        from llmlab.model import GPT

        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.messages: list[str] = []
        self.dist = runtime.dist_from_env()

        # Data first: a missing train.bin should fail before anything is allocated or written.
        self.meta = data_mod.load_meta(self.data_dir)
        self.tokenizer = data_mod.load_tokenizer_for(self.data_dir)
        config, self._data_note = self._apply_data(config)
        state = self._resume_state(resume, config, data_mod)
        self.config = config
        tc = config.train

        self.device, self._owns_process_group = runtime.setup_distributed(self.dist, tc.device)
        self.dtype = select_dtype(tc.dtype, self.device)
        runtime.enable_tf32(self.device)
        # Same seed on every rank for the initial weights (DDP also broadcasts rank 0's), then a
        # rank-specific one so dropout masks differ between ranks.
        torch.manual_seed(tc.seed)
        self.raw_model = GPT(config.model).to(self.device)
        if self.dist.rank:
            torch.manual_seed(tc.seed + self.dist.rank)
        self.optimizer = self.raw_model.configure_optimizer(
            tc.weight_decay, tc.max_lr, (tc.beta1, tc.beta2), self.device.type, tc.optimizer, tc.muon_lr
        )
        self.scaler = runtime.grad_scaler_for(self.device, self.dtype)  # float16 only
        self.autocast = runtime.autocast_for(self.device, self.dtype)

        self.start_iter = 0
        self.best_val_loss = float("inf")
        self.train_seconds = 0.0
        self._eval_batches: dict[tuple[str, int], Any] = {}
        self.train_batches = self._batches("train", tc.batch_size, tc.seed)
        history = self._restore(state) if state is not None else {}
        # The run's record, filled by fit(); a resumed run's starts with the earlier steps and evaluations.
        self.result = TrainResult(
            steps=[StepInfo(**s) for s in history.get("steps", [])],
            evals=[EvalInfo(**e) for e in history.get("evals", [])],
            best_val_loss=self.best_val_loss,
        )

        self.compiled = should_compile(tc.compile, self.device)
        self.fwd_model: torch.nn.Module = torch.compile(self.raw_model) if self.compiled else self.raw_model
        self.model: torch.nn.Module = self.fwd_model
        if self.dist.enabled:
            self.model = runtime.wrap_ddp(self.fwd_model, self.device)

        self._threads_before = torch.get_num_threads()  # fit() puts it back: a notebook's other work keeps it
        runtime.set_cpu_threads(cpu_threads, self.device)
        # The caller's callbacks, then the opt-in helpers the keyword arguments ask for (unless given already).
        self.callbacks = list(callbacks)
        if cpu_threads == "auto" and self.device.type == "cpu" and self._threads_before > 1:
            self._add_helper(helpers.ThreadTuner())
        if oom_retry:
            self._add_helper(helpers.OOMRetry())
        if stuck_patience > 0:
            self._add_helper(helpers.StuckHint(stuck_patience))
        self.flops_per_token = self.raw_model.estimate_flops_per_token()
        self.peak_flops = peak_flops_for(self.device)
        self._fitted = False

    # ---- the loop --------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train until ``max_iters`` (or ``max_seconds``): schedule -> step -> evaluate -> checkpoint -> log."""
        if self._fitted:
            raise RuntimeError("Trainer.fit() ran already; build a new Trainer (resume=True continues a run).")
        self._fitted = True
        tc, mc, result = self.config.train, self.config.model, self.result
        step, stop, lr = self.start_iter, "", lr_at(self.start_iter, tc)
        evaluated_at = step if step > 0 else -1  # a resumed run was evaluated where its checkpoint was written
        try:
            self._start()  # device line, on_train_start, what the data decided
            t_start = time.perf_counter() - self.train_seconds  # the clock goes on across a resume
            window_t0, window_steps = time.perf_counter(), 0  # throughput is measured between log lines
            while True:
                # ---- schedule: stop at max_iters, or when the wall-clock budget is spent
                elapsed = time.perf_counter() - t_start
                if tc.max_seconds > 0:
                    elapsed = runtime.all_reduce_max(elapsed, self.dist, self.device)  # all ranks stop at the same step
                self.train_seconds = elapsed
                time_fraction = elapsed / tc.max_seconds if tc.max_seconds > 0 else None
                if step >= tc.max_iters:
                    stop = "max_iters"
                elif time_fraction is not None and time_fraction >= 1.0:
                    stop = "max_seconds"

                # ---- evaluate and checkpoint: every eval_interval steps, and once more where training stops
                if step != evaluated_at and (step % tc.eval_interval == 0 or stop):
                    train_loss, val_loss = self._retry_on_oom(self.evaluate)
                    self._check_finite(val_loss, step, "val loss", lr)
                    # Step 0 is the untrained model: never "best" and not saved (resuming from it = a fresh start).
                    is_best = step > 0 and val_loss < self.best_val_loss
                    if is_best:
                        self.best_val_loss = val_loss
                    info = EvalInfo(step, train_loss, val_loss, self._bpb(val_loss), is_best, elapsed)
                    result.evals.append(info)
                    if step > 0:
                        self.save(step, is_best)
                    self._emit("on_eval", info)
                    evaluated_at = step
                    window_t0, window_steps = time.perf_counter(), 0  # eval time is not training throughput
                if stop:
                    break

                # ---- one optimizer step at the scheduled learning rate
                lr = lr_at(step, tc, time_fraction)
                self._emit("on_step_start", step)
                t_step = time.perf_counter()
                loss = self._retry_on_oom(self.train_step, lr)  # () mean over micro-batches, still on the device
                step += 1
                window_steps += 1
                self._emit("on_step_timed", step, time.perf_counter() - t_step)

                # ---- log: reading the loss waits for a GPU, so there only at log steps; on CPU it is free
                logging = step % tc.log_interval == 0
                if logging or self.device.type == "cpu":
                    loss_value = float(runtime.all_reduce_mean(loss, self.dist) if logging else loss)
                    self._check_finite(loss_value, step, "train loss", lr)
                if logging:
                    dt = time.perf_counter() - window_t0
                    # batch_size * grad_accum_steps is constant, even after an out-of-memory retry.
                    tokens = window_steps * tc.batch_size * tc.grad_accum_steps * mc.block_size * self.dist.world_size
                    tps = tokens / dt if dt > 0 else 0.0
                    mfu = self.raw_model.estimate_mfu(tps, self.peak_flops) if self.peak_flops else None
                    info = StepInfo(step, loss_value, lr, tps, mfu, time.perf_counter() - t_start)
                    result.steps.append(info)
                    self._emit("on_step_end", info)
                    window_t0, window_steps = time.perf_counter(), 0
            return self._finish(step, stop, time.perf_counter() - t_start)
        except BaseException as error:
            self._abort(error)
            raise
        finally:
            if torch.get_num_threads() != self._threads_before:
                torch.set_num_threads(self._threads_before)
            runtime.teardown_distributed(self._owns_process_group)

    # ---- one optimizer step, one evaluation ------------------------------------------------------------

    def train_step(self, lr: float) -> torch.Tensor:
        """Forward/backward over ``grad_accum_steps`` micro-batches, then one optimizer update; the mean loss."""
        tc = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's groups run at muon_lr on the same schedule
        accum = tc.grad_accum_steps
        total: torch.Tensor | None = None
        for micro in range(accum):
            x, y = self.train_batches.next()  # (B, T), (B, T)
            # DDP: all-reduce gradients only on the last micro-step; the others just accumulate locally.
            last = micro == accum - 1
            sync = self.model.no_sync() if (self.dist.enabled and not last) else contextlib.nullcontext()
            with sync:
                with self.autocast:
                    _, loss = self.model(x, y)  # logits (B, T, V) unused; loss ()
                scaled = loss / accum
                if self.scaler is not None:
                    scaled = self.scaler.scale(scaled)
                scaled.backward()
            detached = loss.detach()
            total = detached if total is None else total + detached
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), tc.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        assert total is not None
        return total / accum

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Mean loss over ``eval_iters`` fixed batches of train and val (the same batches every time)."""
        tc = self.config.train
        self.raw_model.eval()
        try:
            means = []
            for split in ("train", "val"):
                # The sampler's evaluation stream: the same windows at every evaluation, so successive
                # evaluations differ only by the model, and the training sampler/RNG are untouched.
                key = (split, tc.batch_size)
                if key not in self._eval_batches:
                    self._eval_batches[key] = self._batches(split, tc.batch_size, tc.seed)
                total = torch.zeros((), device=self.device)
                for x, y in self._eval_batches[key].eval_batches(tc.eval_iters):  # (B, T), (B, T)
                    with self.autocast:
                        _, loss = self.fwd_model(x, y)
                    total += loss.float()
                means.append(float(runtime.all_reduce_mean(total / tc.eval_iters, self.dist)))
        finally:
            self.raw_model.train()
        return means[0], means[1]

    # ---- checkpoints -----------------------------------------------------------------------------------

    def training_state(self, step: int) -> TrainingState:
        """Everything needed to continue this run exactly from ``step`` (see :mod:`llmlab.checkpoint`)."""
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return TrainingState(
            model=self.raw_model.state_dict(),
            config=self.config.to_dict(),
            tokenizer=self.tokenizer.to_dict(),
            optimizer=self.optimizer.state_dict(),
            iter=step,
            best_val_loss=self.best_val_loss,
            train_seconds=self.train_seconds,
            rng=rng,
            sampler=self.train_batches.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            data_meta=dict(self.meta),
            history={
                "steps": [dict(vars(s)) for s in self.result.steps],
                "evals": [dict(vars(e)) for e in self.result.evals],
            },
        )

    def save(self, step: int, is_best: bool) -> None:
        """Write ``last_checkpoint.bin`` (and ``best_checkpoint.bin``); every rank calls it, rank 0 writes."""
        # A collective: every rank takes part (each rank's sampler position goes into the one checkpoint).
        samplers = runtime.gather_objects(self.train_batches.state_dict(), self.dist)
        if not self.dist.is_main:
            return
        state = self.training_state(step)
        state.sampler_by_rank = samplers
        save_checkpoint(self.out_dir / LAST_NAME, state)
        if is_best:
            save_checkpoint(self.out_dir / BEST_NAME, state)

    def _resume_state(self, resume: bool | TrainingState, config: Config, data_mod: Any) -> TrainingState | None:
        if isinstance(resume, TrainingState):
            state = resume
        elif resume:
            state = load_resume_state(self.out_dir)  # the one place a missing checkpoint is reported
        else:
            return None
        state.check_architecture(config.model, source=str(self.out_dir / LAST_NAME))
        if state.tokenizer is not None:
            data_mod.check_compatible(self.meta, state.tokenizer)
        return state

    def _restore(self, state: TrainingState) -> dict[str, Any]:
        """Load a checkpoint's model, optimizer, RNG and sampler state; return its history."""
        load_model_state(self.raw_model, state.model)
        if state.optimizer is None:
            raise ValueError(
                f"{self.out_dir / LAST_NAME} has no optimizer state, so it cannot be resumed; "
                f"start a fresh run in a new --out directory."
            )
        self.optimizer.load_state_dict(state.optimizer)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.start_iter = state.iter
        self.best_val_loss = state.best_val_loss
        self.train_seconds = state.train_seconds
        if "cpu" in state.rng:
            torch.set_rng_state(state.rng["cpu"])
        cuda_rng = state.rng.get("cuda")
        if cuda_rng is not None and self.device.type == "cuda" and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)
        if state.sampler_by_rank and len(state.sampler_by_rank) == self.dist.world_size:
            self.train_batches.load_state_dict(state.sampler_by_rank[self.dist.rank])
        elif state.sampler is not None:
            # Every rank draws the same number of batches: rank 0's position is everyone's position.
            self.train_batches.load_state_dict(state.sampler)
        if self.dist.rank:
            torch.manual_seed(self.config.train.seed + self.dist.rank + self.start_iter)
        return state.history or {}

    # ---- setup helpers -----------------------------------------------------------------------------

    def _apply_data(self, config: Config) -> tuple[Config, str]:
        """The data decides vocab_size and the tokenizer: apply both, and say so (once) where the config differs."""
        decided = {"vocab_size": int(self.meta["vocab_size"]), "tokenizer": self.tokenizer.name}
        asked = {"vocab_size": config.model.vocab_size, "tokenizer": config.train.tokenizer}
        changed = [f"{k}={v!r} (the config said {asked[k]!r})" for k, v in decided.items() if v != asked[k]]
        note = f"note: the data in {self.data_dir} sets {', '.join(changed)}." if changed else ""
        return config.override(decided), note

    def _add_helper(self, helper: Callback) -> None:
        if not any(isinstance(cb, type(helper)) for cb in self.callbacks):
            self.callbacks.append(helper)

    def _batches(self, split: str, batch_size: int, seed: int) -> Any:
        from llmlab.data import TokenBatches

        return TokenBatches(
            self.data_dir,
            split,
            self.config.model.block_size,
            batch_size,
            device=str(self.device),
            seed=seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

    # ---- reporting -----------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """A message for the user (hints, warnings): kept in ``messages`` and passed to callbacks."""
        if not self.dist.is_main:
            return
        self.messages.append(message)
        handled = False
        for cb in self.callbacks:
            hook = getattr(type(cb), "on_message", None)
            if hook is not None and hook is not Callback.on_message:
                cb.on_message(self, message)
                handled = True
        if not handled:
            print(message, file=sys.stderr)

    def _emit(self, hook: str, *args: Any) -> list[Any]:
        """Call ``hook`` on each callback (rank 0 only, unless a callback asks for all ranks); their answers."""
        answers = []
        for cb in self.callbacks:
            if self.dist.is_main or getattr(cb, "all_ranks", False):
                method = getattr(cb, hook, None)
                if method is not None:
                    answers.append(method(self, *args))
        return answers

    def _start(self) -> None:
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.log(
                explain_device(self.device)
                if self.device.type != "cuda"
                else f"{explain_device(self.device)} dtype={str(self.dtype).removeprefix('torch.')}, "
                f"compile={self.compiled}, world_size={self.dist.world_size}"
            )
        self._emit("on_train_start")
        if self._data_note:
            self.log(self._data_note)
        self.raw_model.train()

    def _finish(self, step: int, stop: str, seconds: float) -> TrainResult:
        result = self.result
        result.final_step, result.seconds, result.stop_reason = step, seconds, stop
        result.best_val_loss = self.best_val_loss
        result.best_val_bpb = self._bpb(self.best_val_loss) if math.isfinite(self.best_val_loss) else float("inf")
        rates = [s.tokens_per_sec for s in result.steps if s.step > self.start_iter]
        result.tokens_per_sec = statistics.median(rates) if rates else 0.0
        result.best_checkpoint = self.out_dir / BEST_NAME if (self.out_dir / BEST_NAME).exists() else None
        result.last_checkpoint = self.out_dir / LAST_NAME if (self.out_dir / LAST_NAME).exists() else None
        result.messages = list(self.messages)
        self._emit("on_train_end", result)
        return result

    def _abort(self, error: BaseException) -> None:
        if isinstance(error, KeyboardInterrupt):
            last = self.out_dir / LAST_NAME
            self.log(
                "interrupted. "
                + (
                    f"Continue with --resume (last checkpoint: {last})."
                    if last.exists()
                    else "No checkpoint was written yet."
                )
            )
        self._emit("on_train_abort", error)

    def _bpb(self, loss: float) -> float:
        return bits_per_byte(loss, int(self.meta["val_tokens"]), int(self.meta["val_bytes"]))

    # ---- what can go wrong ---------------------------------------------------------------------------

    def _check_finite(self, value: float, step: int, what: str, lr: float) -> None:
        if math.isfinite(value):
            return
        tc = self.config.train
        last = self.out_dir / LAST_NAME
        kept = (
            f"The last good checkpoint is kept at {last}."
            if last.exists()
            else "No checkpoint was written yet (none before the first evaluation)."
        )
        fp16 = " or use dtype=bfloat16 / float32 instead of float16" if self.dtype == torch.float16 else ""
        clip = "" if tc.grad_clip > 0 else ", turn on gradient clipping (grad_clip=1.0)"
        raise TrainingError(
            f"{what} became {value} at step {step} (lr={lr:.3g}): training diverged. Lower max_lr "
            f"(now {tc.max_lr:g}; try --set max_lr={tc.max_lr / 3:.2g}){clip}, lengthen warmup_iters "
            f"(now {tc.warmup_iters}){fp16}. {kept}"
        )

    def _retry_on_oom(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; after a CUDA out-of-memory error, as the callbacks decide: smaller micro-batch, or stop."""
        while True:
            try:
                return fn(*args)
            except OutOfMemoryError as error:
                self._recover_from_oom(error)

    def _recover_from_oom(self, error: BaseException) -> None:
        tc, mc = self.config.train, self.config.model
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        b = tc.batch_size
        new = next((n for n in self._emit("on_oom", error) if n is not None), None)
        if new is None:
            smaller = helpers.smaller_batch(b)
            fit = (
                f"batch_size={smaller} grad_accum_steps={tc.grad_accum_steps * (b // smaller)}"
                if b > 1
                else f"block_size={max(1, mc.block_size // 2)}"
            )
            raise TrainingError(
                f"out of memory on {self.device} at batch_size={b}, block_size={mc.block_size}, "
                f"grad_accum_steps={tc.grad_accum_steps} ({self.raw_model.num_parameters() / 1e6:.1f} M parameters). "
                f"Try --set {fit} (same sequences per step)"
                + ("" if b > 1 else ", or a smaller model (embedding_size/depth)")
                + (", or dtype=bfloat16" if self.dtype == torch.float32 and self.device.type == "cuda" else "")
                + "."
            )
        if isinstance(new, bool) or not isinstance(new, int) or not 1 <= new < b or b % new:
            raise ValueError(
                f"an on_oom callback returned batch size {new!r}: it must divide batch_size={b} and be smaller."
            )
        accum = tc.grad_accum_steps * (b // new)
        self.config = self.config.override(batch_size=new, grad_accum_steps=accum)
        # The same stream, continued from where it is: fresh batches, never a replay of earlier ones, and
        # a resumed run continues it exactly (the checkpoint records the position and the new batch size).
        position = self.train_batches.state_dict()
        self.train_batches = self._batches("train", new, int(position["seed"]))
        self.train_batches.load_state_dict({**position, "batch_size": new})
        self.log(
            f"out of memory at batch_size={b}: retrying with batch_size={new}, grad_accum_steps={accum} "
            f"(same {b * tc.grad_accum_steps} sequences per step). Next time start with "
            f"--set batch_size={new} grad_accum_steps={accum}."
        )
