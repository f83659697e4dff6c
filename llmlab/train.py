"""The training loop: one :class:`Trainer` for notebooks (live plots) and the command line (progress bar).

What a step does (nanoGPT's loop, made explicit)::

    for micro in range(grad_accum_steps):          # gradient accumulation
        x, y = batches.next()                      # (B, T) int64 windows of the token memmap
        with autocast:  _, loss = model(x, y)      # bf16/fp16 on CUDA, fp32 on CPU
        (loss / grad_accum_steps).backward()       # DDP syncs gradients only on the last micro-step
    clip_grad_norm_(params, grad_clip); optimizer.step(); optimizer.zero_grad(set_to_none=True)

The learning rate follows :func:`lr_at` (linear warmup, then cosine down to ``min_lr``). Every
``eval_interval`` steps the model is evaluated on fixed train/val batches, the loss is converted to
bits per byte (comparable across char, BPE and GPT-2 tokenizers) and ``last_checkpoint.bin`` /
``best_checkpoint.bin`` are written through :mod:`llmlab.checkpoint`.

Progress is reported to :class:`Callback` objects; :class:`ProgressBar` and :class:`MetricsLogger` are
built in, the notebooks add a live plot. Under ``torchrun`` the same loop runs distributed (DDP): each
process trains on its own stream of batches, gradients are averaged across processes once per optimizer
step, and only rank 0 logs and writes checkpoints::

    torchrun --standalone --nproc_per_node=8 -m llmlab train --preset gpt2_124m --data data/openwebtext_gpt2
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from llmlab.checkpoint import BEST_NAME, LAST_NAME, load_checkpoint, load_model_state, save_checkpoint
from llmlab.config import Config, TrainConfig

__all__ = [
    "lr_at",
    "select_device",
    "explain_device",
    "select_dtype",
    "should_compile",
    "peak_flops_for",
    "TrainingError",
    "StepInfo",
    "EvalInfo",
    "TrainResult",
    "Callback",
    "ProgressBar",
    "MetricsLogger",
    "Trainer",
    "bits_per_byte",
]

# torch >= 2.5 exposes the CUDA OOM error at top level; older builds only under torch.cuda.
OutOfMemoryError = getattr(torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", RuntimeError))
# Settings that change tensor shapes: a checkpoint can only resume into the same values.
_ARCH_FIELDS = ("vocab_size", "block_size", "embedding_size", "num_heads", "depth", "bias")


class TrainingError(RuntimeError):
    """Training cannot continue (loss diverged, out of memory); the message says what to change."""


# --------------------------------------------------------------------------------------------------
# Learning-rate schedule


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


def bits_per_byte(loss_nats: float, tokens: int, nbytes: int) -> float:
    """Mean loss per token (nats) -> bits per byte of the underlying UTF-8 text."""
    if tokens <= 0 or nbytes <= 0:
        raise ValueError(f"tokens={tokens}, bytes={nbytes}: both must be > 0 to convert to bits per byte.")
    return loss_nats / math.log(2) * tokens / nbytes


# --------------------------------------------------------------------------------------------------
# Device, precision, compilation


def select_device(pref: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU for ``"auto"``; an explicit choice is checked and honoured."""
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={pref!r} asked for, but {_why_no_cuda()} Use device=auto or device=cpu.")
        index = int(pref.split(":", 1)[1]) if ":" in pref else 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device={pref!r}: only {torch.cuda.device_count()} CUDA device(s) visible; use cuda:0..."
                f"{torch.cuda.device_count() - 1}."
            )
        return torch.device(pref)
    if pref == "mps":
        if not _mps_available():
            raise ValueError("device='mps' asked for, but Apple MPS is not available here; use device=auto or cpu.")
        return torch.device("mps")
    if pref == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device={pref!r} is not valid: use auto, cpu, cuda, cuda:N or mps.")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return (f"this torch build ({torch.__version__}) has no CUDA support (a CPU-only wheel); on a machine "
                f"with an NVIDIA GPU install the CUDA build of torch (see the README).")
    return (f"torch {torch.__version__} was built for CUDA {torch.version.cuda} but sees no GPU (no NVIDIA "
            f"driver, or CUDA_VISIBLE_DEVICES hides it; check `nvidia-smi`).")


def explain_device(device: torch.device) -> str:
    """One line saying where training runs and, on CPU, why not on a GPU."""
    if device.type == "cuda":
        return f"Training on CUDA ({torch.cuda.get_device_name(device)})."
    if device.type == "mps":
        return "Training on Apple MPS."
    return (f"Training on CPU ({torch.get_num_threads()} threads): no CUDA GPU, because {_why_no_cuda()} "
            f"Small presets such as cpu_small are sized for this.")


def select_dtype(pref: str, device: torch.device) -> torch.dtype:
    """Compute dtype: ``auto`` is bfloat16 on CUDA GPUs that support it, float16 on older ones, else float32.

    CPUs without native bf16 run autocast slower than fp32, so auto keeps fp32 there.
    """
    if pref != "auto":
        try:
            return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[pref]
        except KeyError:
            raise ValueError(f"dtype={pref!r} is not valid: use auto, float32, bfloat16 or float16.") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def should_compile(pref: str, device: torch.device) -> bool:
    """``torch.compile`` by default on CUDA only: at CPU sizes it did not pay for its compile time."""
    if pref == "auto":
        return device.type == "cuda"
    if pref in ("true", "false"):
        return pref == "true"
    raise ValueError(f"compile={pref!r} is not valid: use auto, true or false.")


# Dense bf16/fp16 tensor-core peaks (FLOP/s) for the MFU estimate; LLMLAB_PEAK_FLOPS overrides.
_GPU_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12,
              "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12}


def peak_flops_for(device: torch.device) -> float | None:
    """The device's peak FLOP/s for the MFU figure, or None when unknown (CPU unless LLMLAB_PEAK_FLOPS is set)."""
    env = os.environ.get("LLMLAB_PEAK_FLOPS")
    if env:
        try:
            return float(env)
        except ValueError:
            raise ValueError(f"LLMLAB_PEAK_FLOPS={env!r} is not a number; e.g. LLMLAB_PEAK_FLOPS=135e9.") from None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in sorted(_GPU_PEAKS.items(), key=lambda kv: -len(kv[0])):  # "L40S" before "L4"
            if key in name:
                return peak
    return None


# --------------------------------------------------------------------------------------------------
# Callbacks


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
    """What :meth:`Trainer.fit` returns."""

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


class Callback:
    """Override any of these; each is called on the main process only (rank 0 under torchrun)."""

    def on_train_start(self, trainer: "Trainer") -> None: ...

    def on_step_end(self, trainer: "Trainer", info: StepInfo) -> None: ...

    def on_eval(self, trainer: "Trainer", info: EvalInfo) -> None: ...

    def on_message(self, trainer: "Trainer", message: str) -> None: ...

    def on_train_end(self, trainer: "Trainer", result: TrainResult) -> None: ...

    def on_train_abort(self, trainer: "Trainer", error: BaseException) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar over optimizer steps with loss, lr and tokens/s; evaluation lines printed above it."""

    def __init__(self, file: Any = None) -> None:
        self.file = file
        self.bar: Any = None

    def on_train_start(self, trainer: "Trainer") -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=trainer.config.train.max_iters, initial=trainer.start_iter, unit="step",
                        dynamic_ncols=True, file=self.file or sys.stderr)

    def on_step_end(self, trainer: "Trainer", info: StepInfo) -> None:
        if self.bar is None:
            return
        post = {"loss": f"{info.loss:.4f}", "lr": f"{info.lr:.2e}", "tok/s": f"{info.tokens_per_sec:,.0f}"}
        if info.mfu is not None:
            post["mfu"] = f"{100 * info.mfu:.1f}%"
        self.bar.set_postfix(post, refresh=False)  # shown by the update below
        self.bar.update(info.step - self.bar.n)

    def on_eval(self, trainer: "Trainer", info: EvalInfo) -> None:
        best = "  (best)" if info.is_best else ""
        self.on_message(trainer, f"step {info.step}: train {info.train_loss:.4f}, val {info.val_loss:.4f} "
                                 f"nats/token, val {info.val_bpb:.3f} bits/byte{best}")

    def on_message(self, trainer: "Trainer", message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.file or sys.stderr)
        else:
            print(message, file=self.file or sys.stderr)

    def on_train_end(self, trainer: "Trainer", result: TrainResult) -> None:
        self._close()

    def on_train_abort(self, trainer: "Trainer", error: BaseException) -> None:
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

    def on_train_start(self, trainer: "Trainer") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in self.read(self.path) if int(r["step"]) <= trainer.start_iter] if (
            trainer.start_iter > 0 and self.path.exists()) else []
        # Line buffering: a row is on disk as soon as it is written (other processes may watch the file).
        self._file = open(self.path, "w", buffering=1, newline="")
        if self.path.suffix == ".csv":
            self._csv = csv.DictWriter(self._file, fieldnames=self.COLUMNS)
            self._csv.writeheader()
        for row in kept:
            self._write(row)

    def _write(self, row: dict[str, Any]) -> None:
        row = {k: row.get(k) for k in self.COLUMNS}
        if self.path.suffix == ".csv":
            self._csv.writerow({k: ("" if v is None else v) for k, v in row.items()})
        else:
            self._file.write(json.dumps(row) + "\n")

    def on_step_end(self, trainer: "Trainer", info: StepInfo) -> None:
        self._write({"kind": "step", **dataclasses.asdict(info)})

    def on_eval(self, trainer: "Trainer", info: EvalInfo) -> None:
        self._write({"kind": "eval", **{k: v for k, v in dataclasses.asdict(info).items() if k != "is_best"}})

    def on_train_end(self, trainer: "Trainer", result: TrainResult) -> None:
        self._close()

    def on_train_abort(self, trainer: "Trainer", error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

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
                    row = {k: (v if k == "kind" else (float(v) if v not in ("", None) else None))
                           for k, v in r.items()}
                    if row.get("step") is not None:
                        row["step"] = int(row["step"])  # steps stay whole numbers when a resumed file is rewritten
                    rows.append(row)
        return rows


# --------------------------------------------------------------------------------------------------
# Distributed (torchrun) helpers


@dataclass(frozen=True)
class _Dist:
    enabled: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dist_from_env() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    return _Dist(True, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)


class _ThreadTuner:
    """On CPU, switches between all threads and one thread, whichever makes steps faster right now.

    When other processes keep a core busy, every parallel region of a multi-threaded step waits for a
    descheduled thread: on the 2-core course machine this made steps up to 10x slower than with one
    thread (bench/train.py notes). On an idle machine all threads win. So: time the steps, and every
    ``period`` steps try the other setting for ``probe`` steps; keep it if it is at least 10% faster.
    """

    def __init__(self, max_threads: int, period: int = 50, probe: int = 3) -> None:
        self.options = (max_threads, 1)
        self.current = max_threads
        self.period, self.probe = period, probe
        self.recent: list[float] = []  # step times with the current setting
        self.trial: list[float] = []
        self.trying: int | None = None
        self.next_probe = 10  # the first look comes early: a busy machine should not cost a whole period

    def before_step(self) -> None:
        if self.trying is None and len(self.recent) >= self.next_probe:
            self.trying = self.options[1] if self.current == self.options[0] else self.options[0]
            self.trial = []
            torch.set_num_threads(self.trying)

    def after_step(self, seconds: float) -> None:
        if self.trying is None:
            self.recent.append(seconds)
            return
        self.trial.append(seconds)
        if len(self.trial) < self.probe:
            return
        if statistics.median(self.trial) < 0.9 * statistics.median(self.recent[-3 * self.probe:]):
            self.current, self.recent = self.trying, list(self.trial)
        else:
            torch.set_num_threads(self.current)
            self.recent = self.recent[-3 * self.probe:]
        self.trying = None
        self.next_probe = len(self.recent) + self.period


# --------------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """Trains a GPT on a prepared data directory and writes checkpoints to ``out_dir``.

    ``Trainer(config, data_dir, out_dir, callbacks=[ProgressBar()]).fit()`` is the whole API; the model,
    optimizer and tokenizer are attributes for notebooks to inspect. ``resume=True`` continues from
    ``out_dir/last_checkpoint.bin`` (the model settings must match it; training settings may change).
    ``oom_retry`` halves the micro-batch and doubles ``grad_accum_steps`` after a CUDA out-of-memory
    error (same sequences per step) instead of stopping. ``cpu_threads``: on CPU, ``"auto"`` switches
    between all threads and one by measured step time (robust when other programs load the cores);
    a number fixes it (bit-exact reruns need a fixed count, e.g. OMP_NUM_THREADS=1).
    """

    def __init__(
        self,
        config: Config,
        data_dir: str | os.PathLike,
        out_dir: str | os.PathLike,
        callbacks: Sequence[Callback] = (),
        resume: bool = False,
        oom_retry: bool = True,
        stuck_patience: int = 3,
        cpu_threads: int | str = "auto",
    ) -> None:
        from llmlab import data as data_mod
        from llmlab.model import GPT

        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.callbacks = list(callbacks)
        self.oom_retry = oom_retry
        self.stuck_patience = stuck_patience
        self.messages: list[str] = []
        self.dist = _dist_from_env()

        # Data first: a missing train.bin should fail before anything is allocated or written.
        self.meta = data_mod.load_meta(self.data_dir)
        self.tokenizer = data_mod.load_tokenizer_for(self.data_dir)
        # The data decides the vocabulary (and the tokenizer recorded in checkpoints).
        self._tokenizer_note = (
            f"note: {self.data_dir} was tokenized with {self.tokenizer.name!r}; training on it (the config said "
            f"tokenizer={config.train.tokenizer!r})." if self.tokenizer.name != config.train.tokenizer else "")
        config = config.override(vocab_size=int(self.meta["vocab_size"]), tokenizer=self.tokenizer.name)

        payload = self._load_resume_payload(config, data_mod) if resume else None
        self.config = config
        tc = config.train

        self._init_distributed(tc)
        self.device = self._device
        self.dtype = select_dtype(tc.dtype, self.device)
        if self.device.type == "cuda":
            # TF32 matmuls: ~free speed on Ampere+ for whatever still runs in fp32 (the whole model when
            # dtype=float32). The GPT has no convolutions, so cuDNN's own TF32 switch does not matter.
            torch.set_float32_matmul_precision("high")

        # Same seed on every rank for the initial weights (DDP also broadcasts rank 0's), then a
        # rank-specific one so dropout masks differ between ranks.
        torch.manual_seed(tc.seed)
        self.raw_model = GPT(config.model).to(self.device)
        if self.dist.rank:
            torch.manual_seed(tc.seed + self.dist.rank)
        self.optimizer = self.raw_model.configure_optimizer(
            tc.weight_decay, tc.max_lr, (tc.beta1, tc.beta2), self.device.type)
        # GradScaler only for float16: bf16 has fp32's exponent range and needs no loss scaling.
        self.scaler = torch.amp.GradScaler(self.device.type) if self.dtype == torch.float16 else None
        self.autocast = (
            torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
            else contextlib.nullcontext()
        )

        self.start_iter = 0
        self.best_val_loss = float("inf")
        self.train_seconds = 0.0
        self._history: dict[str, list[dict[str, Any]]] = {"steps": [], "evals": []}
        self.train_batches = self._batches("train", tc.batch_size, tc.seed)
        if payload is not None:
            self._restore(payload)

        self.compiled = should_compile(tc.compile, self.device)
        self.fwd_model: torch.nn.Module = torch.compile(self.raw_model) if self.compiled else self.raw_model
        self.model: torch.nn.Module = self.fwd_model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.fwd_model, device_ids=ids)

        self._threads_before = torch.get_num_threads()
        self._tuner: _ThreadTuner | None = None
        if self.device.type == "cpu":
            if cpu_threads == "auto":
                if self._threads_before > 1:
                    self._tuner = _ThreadTuner(self._threads_before)
            elif isinstance(cpu_threads, int) and not isinstance(cpu_threads, bool) and cpu_threads >= 1:
                torch.set_num_threads(cpu_threads)
            else:
                raise ValueError(f"cpu_threads={cpu_threads!r} is not valid: use 'auto' or a whole number >= 1.")
        self.flops_per_token = self.raw_model.estimate_flops_per_token()
        self.peak_flops = peak_flops_for(self.device)
        self._fitted = False

    # ---- setup helpers -----------------------------------------------------------------------------

    def _init_distributed(self, tc: TrainConfig) -> None:
        self._owns_process_group = False
        if not self.dist.enabled:
            self._device = select_device(tc.device)
            return
        import torch.distributed as dist

        use_cuda = torch.cuda.is_available() and tc.device in ("auto", "cuda")
        self._device = torch.device(f"cuda:{self.dist.local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(self._device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
            self._owns_process_group = True

    def _batches(self, split: str, batch_size: int, seed: int) -> Any:
        from llmlab.data import TokenBatches

        return TokenBatches(self.data_dir, split, self.config.model.block_size, batch_size,
                            device=str(self.device), seed=seed, rank=self.dist.rank,
                            world_size=self.dist.world_size)

    def _load_resume_payload(self, config: Config, data_mod: Any) -> dict[str, Any]:
        path = self.out_dir / LAST_NAME
        if not path.exists():
            raise FileNotFoundError(
                f"--resume: no checkpoint to resume from at {path}. Start a fresh run without --resume "
                f"(llmlab train --out {self.out_dir}), or pass the --out directory of the earlier run."
            )
        payload = load_checkpoint(path)
        saved = Config.from_dict(payload["config"]).model
        diffs = [f"{k}: checkpoint {getattr(saved, k)!r}, now {getattr(config.model, k)!r}"
                 for k in _ARCH_FIELDS if getattr(saved, k) != getattr(config.model, k)]
        if diffs:
            raise ValueError(
                f"cannot resume from {path}: it was made for another architecture ({'; '.join(diffs)}). "
                f"Resume with the checkpoint's settings, or start fresh in a new --out directory."
            )
        tok = payload.get("tokenizer")
        if tok is not None:
            data_mod.check_compatible(self.meta, tok)
        return payload

    def _restore(self, payload: dict[str, Any]) -> None:
        load_model_state(self.raw_model, payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.start_iter = int(payload["iter"])
        self.best_val_loss = float(payload.get("best_val_loss", float("inf")))
        self.train_seconds = float(payload.get("train_seconds", 0.0))
        self._history = payload.get("history") or {"steps": [], "evals": []}
        rng = payload.get("rng") or {}
        if "cpu" in rng:
            torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.device.type == "cuda" and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        samplers = payload.get("sampler_by_rank")
        if samplers and len(samplers) == self.dist.world_size:
            self.train_batches.load_state_dict(samplers[self.dist.rank])
        elif payload.get("sampler") is not None:
            # Every rank draws the same number of batches: rank 0's position is everyone's position.
            self.train_batches.load_state_dict(payload["sampler"])
        if self.dist.rank:
            torch.manual_seed(self.config.train.seed + self.dist.rank + self.start_iter)

    # ---- reporting -----------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """A message for the user (hints, warnings): kept in ``messages`` and passed to callbacks."""
        if not self.dist.is_main:
            return
        self.messages.append(message)
        handled = False
        for cb in self.callbacks:
            if type(cb).on_message is not Callback.on_message:
                cb.on_message(self, message)
                handled = True
        if not handled:
            print(message, file=sys.stderr)

    def _emit(self, name: str, *args: Any) -> None:
        if self.dist.is_main:
            for cb in self.callbacks:
                getattr(cb, name)(self, *args)

    # ---- one optimizer step --------------------------------------------------------------------------

    def _train_step(self, lr: float) -> torch.Tensor:
        """Forward/backward over ``grad_accum_steps`` micro-batches, then one AdamW update; returns the mean loss."""
        tc = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = tc.grad_accum_steps
        total: torch.Tensor | None = None
        for micro in range(accum):
            x, y = self.train_batches.next()  # (B, T), (B, T)
            # DDP: all-reduce gradients only on the last micro-step; the others just accumulate locally.
            last = micro == accum - 1
            sync = self.model.no_sync() if (self.dist.enabled and not last) else contextlib.nullcontext()
            with sync:
                with self.autocast:
                    _, loss = self.model(x, y)
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

    def _step_with_oom_guard(self, lr: float) -> torch.Tensor:
        while True:
            try:
                return self._train_step(lr)
            except OutOfMemoryError:
                self._recover_from_oom()

    def _recover_from_oom(self) -> None:
        tc, mc = self.config.train, self.config.model
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        b = tc.batch_size
        # Largest divisor of the batch at most half of it: the sequences per step stay exactly the same.
        smaller = max(d for d in range(1, b // 2 + 1) if b % d == 0) if b > 1 else 1
        factor = b // smaller
        fit = (f"batch_size={smaller} grad_accum_steps={tc.grad_accum_steps * factor}" if b > 1
               else f"block_size={max(1, mc.block_size // 2)}")
        # Under DDP every rank must take the same steps: a retry on one rank alone would deadlock the others.
        if b == 1 or not self.oom_retry or self.dist.enabled:
            raise TrainingError(
                f"out of memory on {self.device} at batch_size={b}, block_size={mc.block_size}, "
                f"grad_accum_steps={tc.grad_accum_steps} ({self.raw_model.num_parameters() / 1e6:.1f} M parameters). "
                f"Try --set {fit} (same sequences per step)"
                + ("" if b > 1 else f", or a smaller model (embedding_size/depth)")
                + (", or dtype=bfloat16" if self.dtype == torch.float32 and self.device.type == "cuda" else "")
                + "."
            )
        self.config = self.config.override(batch_size=smaller, grad_accum_steps=tc.grad_accum_steps * factor)
        self.train_batches = self._batches("train", smaller, tc.seed + self.start_iter + 1)
        self.log(f"out of memory at batch_size={b}: retrying with batch_size={smaller}, "
                 f"grad_accum_steps={tc.grad_accum_steps * factor} (same {b * tc.grad_accum_steps} sequences per "
                 f"step). Next time start with --set {fit}.")

    # ---- evaluation and checkpoints ------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Mean loss over ``eval_iters`` fixed batches of train and val (the same batches every time)."""
        tc = self.config.train
        self.raw_model.eval()
        means = []
        for split in ("train", "val"):
            # The sampler's evaluation stream: the same windows at every evaluation, so successive
            # evaluations differ only by the model, and the training sampler/RNG are untouched.
            batches = self._batches(split, tc.batch_size, tc.seed)
            total = torch.zeros((), device=self.device)
            for x, y in batches.eval_batches(tc.eval_iters):
                with self.autocast:
                    _, loss = self.fwd_model(x, y)
                total += loss.float()
            mean = total / tc.eval_iters
            if self.dist.enabled:
                import torch.distributed as dist

                dist.all_reduce(mean, op=dist.ReduceOp.AVG if self.device.type == "cuda" else dist.ReduceOp.SUM)
                if self.device.type != "cuda":  # gloo has no AVG
                    mean /= self.dist.world_size
            means.append(float(mean))
        self.raw_model.train()
        return means[0], means[1]

    def _payload(self, step: int) -> dict[str, Any]:
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        payload: dict[str, Any] = {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "iter": step,
            "best_val_loss": self.best_val_loss,
            "rng": rng,
            "sampler": self.train_batches.state_dict(),
            "data_meta": dict(self.meta),
            "train_seconds": self.train_seconds,
            "history": self._history,
        }
        if self.scaler is not None:
            payload["scaler"] = self.scaler.state_dict()
        return payload

    def _gather_samplers(self) -> list[Any] | None:
        if not self.dist.enabled:
            return None
        import torch.distributed as dist

        states: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(states, self.train_batches.state_dict())
        return states

    def _save(self, step: int, is_best: bool) -> None:
        samplers = self._gather_samplers()  # collective: every rank takes part
        if not self.dist.is_main:
            return
        payload = self._payload(step)
        if samplers is not None:
            payload["sampler_by_rank"] = samplers
        save_checkpoint(self.out_dir / LAST_NAME, payload)
        if is_best:
            save_checkpoint(self.out_dir / BEST_NAME, payload)

    def _check_finite(self, value: float, step: int, what: str, lr: float) -> None:
        if math.isfinite(value):
            return
        tc = self.config.train
        last = self.out_dir / LAST_NAME
        kept = (f"The last good checkpoint is kept at {last}." if last.exists()
                else "No checkpoint was written yet (none before the first evaluation).")
        fp16 = " or use dtype=bfloat16 / float32 instead of float16" if self.dtype == torch.float16 else ""
        clip = "" if tc.grad_clip > 0 else ", turn on gradient clipping (grad_clip=1.0)"
        raise TrainingError(
            f"{what} became {value} at step {step} (lr={lr:.3g}): training diverged. Lower max_lr "
            f"(now {tc.max_lr:g}; try --set max_lr={tc.max_lr / 3:.2g}){clip}, lengthen warmup_iters "
            f"(now {tc.warmup_iters}){fp16}. {kept}"
        )

    def _check_stuck(self, evals: list[EvalInfo]) -> None:
        p = self.stuck_patience
        if p <= 0 or len(evals) < p + 2 or getattr(self, "_stuck_hinted", False):
            return
        before = min(e.val_loss for e in evals[:-p])
        recent = min(e.val_loss for e in evals[-p:])
        # Less than 0.5% better over the last p evaluations counts as stuck.
        if recent < before * 0.995:
            return
        self._stuck_hinted = True
        tc, mc = self.config.train, self.config.model
        train_falling = evals[-1].train_loss < evals[-p - 1].train_loss * 0.99
        if train_falling:
            hint = ("train loss still falls while val does not: the model is overfitting. Stop here (the best "
                    f"checkpoint is kept), add dropout (now {mc.dropout}) or train on more data.")
        else:
            hint = (f"both losses are flat: try a different max_lr (now {tc.max_lr:g}; too high and too low both "
                    f"stall) or a bigger model (embedding_size={mc.embedding_size}, depth={mc.depth}).")
        self.log(f"hint: val loss has not improved for {p} evaluations (best {before:.4f}, "
                 f"since then {recent:.4f}); {hint}")

    # ---- the loop --------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train until ``max_iters`` (or ``max_seconds``), evaluating and checkpointing on the way."""
        if self._fitted:
            raise RuntimeError("Trainer.fit() ran already; build a new Trainer (resume=True continues a run).")
        self._fitted = True
        try:
            return self._fit()
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                last = self.out_dir / LAST_NAME
                self.log(f"interrupted. " + (f"Continue with --resume (last checkpoint: {last})."
                                             if last.exists() else "No checkpoint was written yet."))
            self._emit("on_train_abort", error)
            raise
        finally:
            if torch.get_num_threads() != self._threads_before:
                torch.set_num_threads(self._threads_before)  # the notebook's other work keeps its setting
            if self._owns_process_group:
                import torch.distributed as dist

                dist.destroy_process_group()

    def _fit(self) -> TrainResult:
        tc = self.config.train
        result = TrainResult()
        result.steps = [StepInfo(**s) for s in self._history["steps"]]
        result.evals = [EvalInfo(**e) for e in self._history["evals"]]
        result.best_val_loss = self.best_val_loss
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.log(explain_device(self.device) if self.device.type != "cuda" else
                     f"{explain_device(self.device)} dtype={str(self.dtype).removeprefix('torch.')}, "
                     f"compile={self.compiled}, world_size={self.dist.world_size}")
        self._emit("on_train_start")
        if self._tokenizer_note:
            self.log(self._tokenizer_note)
        self.raw_model.train()

        step = self.start_iter
        t_start = time.perf_counter() - self.train_seconds
        window_t0, window_steps = time.perf_counter(), 0
        evaluated_at = self.start_iter if self.start_iter > 0 else -1
        stop = ""
        lr = lr_at(step, tc)
        while True:
            elapsed = time.perf_counter() - t_start
            if tc.max_seconds > 0 and self.dist.enabled:
                elapsed = self._slowest(elapsed)  # every rank must stop at the same step, with the same lr
            self.train_seconds = elapsed
            time_fraction = elapsed / tc.max_seconds if tc.max_seconds > 0 else None
            if step >= tc.max_iters:
                stop = "max_iters"
            elif time_fraction is not None and time_fraction >= 1.0:
                stop = "max_seconds"
            if step % tc.eval_interval == 0 and step != evaluated_at or (stop and step != evaluated_at):
                self._evaluate_and_save(step, lr, result, elapsed)
                evaluated_at = step
                window_t0, window_steps = time.perf_counter(), 0  # eval time is not training throughput
            if stop:
                break

            lr = lr_at(step, tc, time_fraction)
            if self._tuner is not None:
                self._tuner.before_step()
                t_step = time.perf_counter()
            loss = self._step_with_oom_guard(lr)
            if self._tuner is not None:
                self._tuner.after_step(time.perf_counter() - t_step)
            step += 1
            window_steps += 1
            # Reading the loss forces a device sync: on CUDA only at log steps; on CPU it is free.
            if step % tc.log_interval == 0 or self.device.type == "cpu":
                if self.dist.enabled and step % tc.log_interval == 0:
                    loss = self._global_mean(loss)
                loss_value = float(loss)
                self._check_finite(loss_value, step, "train loss", lr)
                if step % tc.log_interval == 0:
                    dt = time.perf_counter() - window_t0
                    tokens = window_steps * tc.batch_size * tc.grad_accum_steps * self.config.model.block_size
                    tps = tokens * self.dist.world_size / dt if dt > 0 else 0.0
                    mfu = self.raw_model.estimate_mfu(tps, self.peak_flops) if self.peak_flops else None
                    info = StepInfo(step, loss_value, lr, tps, mfu, time.perf_counter() - t_start)
                    result.steps.append(info)
                    self._history["steps"].append(dataclasses.asdict(info))
                    self._emit("on_step_end", info)
                    window_t0, window_steps = time.perf_counter(), 0

        result.final_step = step
        result.seconds = time.perf_counter() - t_start
        result.stop_reason = stop
        result.best_val_loss = self.best_val_loss
        result.best_val_bpb = self._bpb(self.best_val_loss) if math.isfinite(self.best_val_loss) else float("inf")
        rates = [s.tokens_per_sec for s in result.steps if s.step > self.start_iter]
        result.tokens_per_sec = statistics.median(rates) if rates else 0.0
        result.best_checkpoint = self.out_dir / BEST_NAME if (self.out_dir / BEST_NAME).exists() else None
        result.last_checkpoint = self.out_dir / LAST_NAME if (self.out_dir / LAST_NAME).exists() else None
        result.messages = list(self.messages)
        self._emit("on_train_end", result)
        return result

    def _slowest(self, seconds: float) -> float:
        import torch.distributed as dist

        t = torch.tensor([seconds], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def _global_mean(self, value: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.dist.world_size

    def _bpb(self, loss: float) -> float:
        return bits_per_byte(loss, int(self.meta["val_tokens"]), int(self.meta["val_bytes"]))

    def _evaluate_and_save(self, step: int, lr: float, result: TrainResult, elapsed: float) -> None:
        while True:
            try:
                train_loss, val_loss = self.evaluate()
                break
            except OutOfMemoryError:
                self.raw_model.train()
                self._recover_from_oom()  # evaluation uses batch_size too
        self._check_finite(val_loss, step, "val loss", lr)
        # Step 0 is the untrained model: it never counts as best, so the first trained eval writes best_checkpoint.
        is_best = step > 0 and val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss = val_loss
        info = EvalInfo(step, train_loss, val_loss, self._bpb(val_loss), is_best, elapsed)
        result.evals.append(info)
        self._history["evals"].append(dataclasses.asdict(info))
        # Step 0 is the untrained model: nothing worth keeping (and resuming from it is a fresh start).
        if step > 0:
            self._save(step, is_best)
        self._emit("on_eval", info)
        self._check_stuck(result.evals)
