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

Ctrl-C or SIGTERM never kills a step half-way: the loop finishes the step it is in, writes
``last_checkpoint.bin`` with that exact state (resuming from it gives the same run as no interruption)
and raises :class:`TrainingInterrupted`.

The rest lives beside the loop: the machine (device, dtype, compile, DDP, peak FLOPs) in :mod:`llmlab.runtime`;
Ctrl-C in :mod:`llmlab.signals`; reports and per-machine heuristics as :class:`~llmlab.callbacks.Callback`
objects; what a failed run says in :mod:`llmlab.failures`; checkpoint files in :mod:`llmlab.checkpoint`. Under
``torchrun`` the same loop runs distributed (DDP; rank 0 logs and writes checkpoints)::

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
from typing import TYPE_CHECKING, Any

import torch

from llmlab import callbacks as helpers  # the opt-in heuristics: ThreadTuner, OOMRetry, StuckHint
from llmlab import failures, runtime
from llmlab.callbacks import Callback, EvalInfo, StepInfo, TrainResult
from llmlab.checkpoint import check_out_dir, resume_state, save_checkpoint
from llmlab.checkpoint_state import BEST_NAME, LAST_NAME, TrainingState, load_model_state
from llmlab.config import Config
from llmlab.failures import TrainingInterrupted
from llmlab.metrics import bits_per_byte
from llmlab.runtime import OutOfMemoryError, explain_device, peak_flops_for
from llmlab.schedule import lr_at
from llmlab.signals import StopSignals

if TYPE_CHECKING:
    from llmlab.data.batches import TrainingData
    from llmlab.model import GPT

__all__ = ["Trainer"]


class Trainer:
    """Trains a GPT on ``data`` and writes checkpoints to ``out_dir``.

    ``Trainer(config, data, out_dir, callbacks=[ProgressBar()]).fit()`` is the whole API; the model,
    optimizer and tokenizer are attributes for notebooks to inspect. ``resume=True`` continues from
    ``out_dir/last_checkpoint.bin`` (the model settings must match it; training settings may change);
    a :class:`~llmlab.checkpoint_state.TrainingState` already loaded (the CLI's) is used as is. An ``out_dir``
    that holds another run's checkpoints is refused unless ``resume`` continues it or ``overwrite=True``
    replaces it (its checkpoints are removed when ``fit`` starts).

    ``data`` is a prepared folder (:func:`llmlab.data.prepare`), or any object with the three members of the
    :class:`llmlab.data.batches.TrainingData` protocol (``meta``, ``tokenizer``, ``batches``).

    ``init_model`` starts from these weights instead of a fresh initialisation (fine-tuning); it is trained
    in place, and its ``config`` must equal ``config.model`` (with the data's vocab_size).

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
        data: str | os.PathLike | TrainingData,
        out_dir: str | os.PathLike,
        callbacks: Sequence[Callback] = (),
        resume: bool | TrainingState = False,
        oom_retry: bool = True,
        stuck_patience: int = 3,
        cpu_threads: int | str = "auto",
        overwrite: bool = False,
        init_model: GPT | None = None,
    ) -> None:
        from llmlab.analysis import check_step_fits  # lazily: `import llmlab.train` stays light for the widgets
        from llmlab.data.batches import PreparedData, settings_from_data

        self.out_dir = Path(out_dir)
        self.messages: list[str] = []
        self.dist = runtime.dist_from_env()

        # Data first: a missing train.bin should fail before anything is allocated or written.
        prepared = isinstance(data, (str, os.PathLike))
        self.data_dir = Path(data) if prepared else None
        self.data = PreparedData(data, config.model.block_size) if prepared else data
        self.meta, self.tokenizer = self.data.meta, self.data.tokenizer
        where = self.data_dir if self.data_dir is not None else type(self.data).__name__
        config, self._data_note = settings_from_data(config, self.meta, self.tokenizer, where)
        if self.dist.is_main:  # a writable folder, and no other run's checkpoints to replace unasked
            check_out_dir(self.out_dir, resume=bool(resume), overwrite=overwrite)
        self._overwrite = overwrite and not resume
        state = resume_state(resume, self.out_dir, config.model, self.tokenizer)
        self.config = config
        tc = config.train

        self.device, self._owns_process_group = runtime.setup_distributed(self.dist, tc.device)
        # Precision and compile for this machine, from one pure rule (runtime.choose_runtime); `note` says why
        # a default gave way (e.g. no Triton: eager). An impossible request (bf16 on a T4) fails here.
        self.plan = runtime.runtime_plan(tc.dtype, tc.compile, self.device)
        self.dtype = self.plan.dtype
        # A step that cannot fit is refused with the numbers before anything large is allocated.
        check_step_fits(config, self.device, 4 if self.dtype == torch.float32 else 2)
        runtime.enable_tf32(self.device)
        self._eval_batches: dict[tuple[str, int], Any] = {}
        self.train_batches = self._batches("train", tc.batch_size, tc.seed)
        for split in ("train", "val"):  # built now: a batch larger than a split is refused here
            self._eval_batches[(split, tc.batch_size)] = self._batches(split, tc.batch_size, tc.seed)
        # Same seed on every rank for the initial weights (DDP also broadcasts rank 0's), then a
        # rank-specific one so dropout masks differ between ranks.
        torch.manual_seed(tc.seed)
        self.raw_model = self._initial_model(init_model).to(self.device)
        if self.dist.rank:
            torch.manual_seed(tc.seed + self.dist.rank)
        self.optimizer = self.raw_model.optimizer_for(tc, self.device.type)
        self.scaler = runtime.grad_scaler_for(self.device, self.dtype)  # float16 only
        self.autocast = runtime.autocast_for(self.device, self.dtype)

        self.start_iter = 0
        self.best_val_loss = float("inf")
        self.train_seconds = 0.0
        self.saved_step: int | None = None  # the step out_dir/last_checkpoint.bin holds from this run, if any
        self.resumed_from = ""
        self.result = TrainResult()  # the run's record, filled by fit()
        if state is not None:
            self.load_state_dict(state)  # a resumed run's record starts with the earlier steps and evaluations

        self.compiled = self.plan.compile
        self.fwd_model: torch.nn.Module = self.raw_model
        if self.compiled:
            self.fwd_model = runtime.compile_model(self.raw_model, self.device)
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
        self.signals = StopSignals()  # Ctrl-C / SIGTERM during fit()
        self.safe_step: int | None = None  # the step the training state is exactly at (None: mid-step)
        self._fitted = False

    # ---- the loop --------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train until ``max_iters`` (or ``max_seconds``): schedule -> step -> evaluate -> checkpoint -> log.

        Ctrl-C / SIGTERM: the step under way finishes, its exact state goes to ``last_checkpoint.bin``, and
        :class:`TrainingInterrupted` is raised (a second Ctrl-C stops at once, without saving).
        """
        if self._fitted:
            raise RuntimeError("Trainer.fit() ran already; build a new Trainer (resume=True continues a run).")
        self._fitted = True
        tc, mc, result = self.config.train, self.config.model, self.result
        step, stop, lr = self.start_iter, "", lr_at(self.start_iter, tc)
        # A resumed run was evaluated where its checkpoint was written, unless it was interrupted between evaluations.
        evaluated_at = step if step > 0 and (not result.evals or result.evals[-1].step == step) else -1
        self.safe_step = step
        try:
            self.signals.install()  # Ctrl-C / SIGTERM now ask for a stop between steps
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
                signal_name = runtime.stop_agreed(
                    self.signals.signal_name, step, self.dist, self.device, tc.log_interval
                )
                if signal_name:  # Ctrl-C / SIGTERM arrived during the last step: keep exactly this state, stop
                    raise failures.interrupted(self, signal_name)

                # ---- one optimizer step at the scheduled learning rate
                lr = lr_at(step, tc, time_fraction)
                self._emit("on_step_start", step)
                t_step = time.perf_counter()
                self.safe_step = None  # mid-step: an exception now leaves no exact state to save
                loss = self._retry_on_oom(self.train_step, lr)  # () mean over micro-batches, still on the device
                step += 1
                self.safe_step = step
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
            reported = self._abort(error)  # a plain Ctrl-C becomes TrainingInterrupted (state saved if exact)
            if reported is not error:
                raise reported from error
            raise
        finally:
            self.signals.restore()
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
                    _, loss = self.model(x, y, return_logits=False)  # loss (); no (B, T, V) logits needed
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
                        _, loss = self.fwd_model(x, y, return_logits=False)
                    total += loss.float()
                means.append(float(runtime.all_reduce_mean(total / tc.eval_iters, self.dist)))
        finally:
            self.raw_model.train()
        return means[0], means[1]

    # ---- checkpoints -----------------------------------------------------------------------------------

    def state_dict(self, step: int) -> TrainingState:
        """Everything needed to continue this run exactly from ``step``: what a checkpoint holds."""
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        record = {
            "steps": [vars(s).copy() for s in self.result.steps],
            "evals": [vars(e).copy() for e in self.result.evals],
        }
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
            history=record,
        )

    def load_state_dict(self, state: TrainingState) -> None:
        """Continue from ``state`` (a checkpoint of this architecture): weights, optimizer, RNG, batches, record."""
        source = state.source or str(self.out_dir / LAST_NAME)
        load_model_state(self.raw_model, state.model)
        if state.optimizer is None:
            raise ValueError(
                f"{source} has no optimizer state, so it cannot be resumed; start a fresh run in a new --out "
                f"directory (or fine-tune from it)."
            )
        self.optimizer.load_state_dict(state.optimizer)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.start_iter, self.best_val_loss, self.train_seconds = state.iter, state.best_val_loss, state.train_seconds
        self.resumed_from = source
        if Path(source).resolve() == (self.out_dir / LAST_NAME).resolve():
            self.saved_step = state.iter  # the file still holds the step this run starts from
        if "cpu" in state.rng:
            torch.set_rng_state(state.rng["cpu"])
        cuda_rng = state.rng.get("cuda")
        if cuda_rng is not None and self.device.type == "cuda" and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)
        if state.sampler_by_rank and len(state.sampler_by_rank) == self.dist.world_size:
            self.train_batches.load_state_dict(state.sampler_by_rank[self.dist.rank])
        elif state.sampler is not None:  # every rank draws as many batches: rank 0's position is everyone's
            self.train_batches.load_state_dict(state.sampler)
        if self.dist.rank:
            torch.manual_seed(self.config.train.seed + self.dist.rank + self.start_iter)
        self.result = TrainResult(
            steps=[StepInfo(**s) for s in state.history.get("steps", [])],
            evals=[EvalInfo(**e) for e in state.history.get("evals", [])],
            best_val_loss=self.best_val_loss,
        )

    def save(self, step: int, is_best: bool) -> None:
        """Write ``last_checkpoint.bin`` (and ``best_checkpoint.bin``); every rank calls it, rank 0 writes."""
        # A collective: every rank takes part (each rank's sampler position goes into the one checkpoint).
        samplers = runtime.gather_objects(self.train_batches.state_dict(), self.dist)
        if not self.dist.is_main:
            return
        state = self.state_dict(step)
        state.sampler_by_rank = samplers
        save_checkpoint(self.out_dir / LAST_NAME, state)
        self.saved_step = step
        if is_best:
            save_checkpoint(self.out_dir / BEST_NAME, state)

    # ---- setup helpers -----------------------------------------------------------------------------

    def _initial_model(self, init_model: GPT | None) -> GPT:
        """A fresh GPT for ``self.config.model``, or ``init_model`` when its settings are exactly those."""
        from llmlab.model import GPT

        if init_model is None:
            return GPT(self.config.model)
        mine, theirs = self.config.model, getattr(init_model, "config", None)
        if not isinstance(init_model, GPT) or theirs != mine:
            diffs = [
                f"{k}: init_model {getattr(theirs, k, '?')!r}, config {getattr(mine, k)!r}"
                for k in vars(mine)
                if getattr(theirs, k, None) != getattr(mine, k)
            ]
            raise ValueError(
                f"init_model does not match config.model ({'; '.join(diffs) or 'not an llmlab GPT'}): build the "
                f"config from the model's own settings, e.g. config.override(dataclasses.asdict(model.config))."
            )
        return init_model

    def _add_helper(self, helper: Callback) -> None:
        if not any(isinstance(cb, type(helper)) for cb in self.callbacks):
            self.callbacks.append(helper)

    def _batches(self, split: str, batch_size: int, seed: int) -> Any:
        return self.data.batches(split, batch_size, seed, self.dist.rank, self.dist.world_size, str(self.device))

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
            check_out_dir(self.out_dir, resume=True)  # still writable (and no race since __init__)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self._overwrite:  # the replaced run's checkpoints go now: the folder never mixes two runs
                for name in (LAST_NAME, BEST_NAME):
                    (self.out_dir / name).unlink(missing_ok=True)
            self.log(
                explain_device(self.device)
                if self.device.type != "cuda"
                else f"{explain_device(self.device)} dtype={str(self.dtype).removeprefix('torch.')}, "
                f"compile={self.compiled}, world_size={self.dist.world_size}"
            )
            if self.plan.note:
                self.log(self.plan.note)
        self._emit("on_train_start")
        if self.start_iter:
            self.log(f"continuing from step {self.start_iter} of {self.config.train.max_iters} ({self.resumed_from})")
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

    def _abort(self, error: BaseException) -> BaseException:
        """Tell the callbacks; a KeyboardInterrupt is reported as :class:`TrainingInterrupted` (what was saved)."""
        if isinstance(error, KeyboardInterrupt) and not isinstance(error, TrainingInterrupted):
            try:
                error = failures.interrupted(self, None)
            except BaseException as failed:  # e.g. the disk is full: report that, not the interrupt
                error = failed
        self._emit("on_train_abort", error)
        return error

    def _bpb(self, loss: float) -> float:
        return bits_per_byte(loss, int(self.meta["val_tokens"]), int(self.meta["val_bytes"]))

    # ---- what can go wrong ---------------------------------------------------------------------------

    def _check_finite(self, value: float, step: int, what: str, lr: float) -> None:
        if not math.isfinite(value):
            raise failures.diverged(self, value, step, what, lr)

    def _retry_on_oom(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``; after a CUDA out-of-memory error, as the callbacks decide: smaller micro-batch, or stop."""
        while True:
            try:
                return fn(*args)
            except OutOfMemoryError as error:
                self.optimizer.zero_grad(set_to_none=True)
                gc.collect()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self._use_micro_batch(failures.oom_batch_size(self, self._emit("on_oom", error)))

    def _use_micro_batch(self, new: int) -> None:
        """Go on with micro-batches of ``new`` sequences, more of them per step: the same sequences per step."""
        tc = self.config.train
        b, accum = tc.batch_size, tc.grad_accum_steps * (tc.batch_size // new)
        self.config = self.config.override(batch_size=new, grad_accum_steps=accum)
        # The same stream, continued from where it is: fresh batches, never a replay of earlier ones, and a resumed
        # run continues it exactly (the checkpoint records the position and the new batch size).
        position = self.train_batches.state_dict()
        self.train_batches = self._batches("train", new, tc.seed)
        self.train_batches.load_state_dict({**position, "batch_size": new})
        self.log(
            f"out of memory at batch_size={b}: retrying with batch_size={new}, grad_accum_steps={accum} "
            f"(same {b * tc.grad_accum_steps} sequences per step). Next time start with "
            f"--set batch_size={new} grad_accum_steps={accum}."
        )
