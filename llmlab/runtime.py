"""Where and how training runs: device, precision, compilation, torchrun (DDP), peak FLOPs.

Everything here depends on the machine, not on the model or the data, so the training loop in
:mod:`llmlab.train` can read the same on a laptop CPU and on eight GPUs:

- :func:`select_device` / :func:`explain_device`  CUDA, then Apple MPS, then CPU (and why not a GPU)
- :func:`select_dtype`, :func:`autocast_for`, :func:`grad_scaler_for`  bf16/fp16 autocast on CUDA, fp32 elsewhere
- :func:`should_compile`, :func:`enable_tf32`  ``torch.compile`` and TF32 matmuls where they pay
- :class:`DistInfo`, :func:`setup_distributed`, :func:`teardown_distributed`, :func:`all_reduce_mean`,
  :func:`all_reduce_max`, :func:`gather_objects`, :func:`wrap_ddp`  the torchrun side of DDP
- :func:`peak_flops_for`  the peak FLOP/s an MFU figure divides by
- :class:`StopSignals`  Ctrl-C / SIGTERM ask training to stop between two steps instead of killing it mid-step

Imports only torch and the standard library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "OutOfMemoryError",
    "select_device",
    "explain_device",
    "select_dtype",
    "autocast_for",
    "grad_scaler_for",
    "should_compile",
    "enable_tf32",
    "set_cpu_threads",
    "DistInfo",
    "dist_from_env",
    "setup_distributed",
    "teardown_distributed",
    "all_reduce_mean",
    "all_reduce_max",
    "any_rank",
    "gather_objects",
    "wrap_ddp",
    "GPU_PEAK_FLOPS",
    "peak_flops_for",
    "StopSignals",
]

# torch >= 2.5 exposes the CUDA OOM error at top level; older builds only under torch.cuda.
OutOfMemoryError: type[BaseException] = getattr(
    torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
)


# --------------------------------------------------------------------------------------------------
# Device


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
        return (
            f"this torch build ({torch.__version__}) has no CUDA support (a CPU-only wheel); on a machine "
            f"with an NVIDIA GPU install the CUDA build of torch (see the README)."
        )
    return (
        f"torch {torch.__version__} was built for CUDA {torch.version.cuda} but sees no GPU (no NVIDIA "
        f"driver, or CUDA_VISIBLE_DEVICES hides it; check `nvidia-smi`)."
    )


def explain_device(device: torch.device) -> str:
    """One line saying where training runs and, on CPU, why not on a GPU."""
    if device.type == "cuda":
        return f"Training on CUDA ({torch.cuda.get_device_name(device)})."
    if device.type == "mps":
        return "Training on Apple MPS."
    return (
        f"Training on CPU ({torch.get_num_threads()} threads): no CUDA GPU, because {_why_no_cuda()} "
        f"Small presets such as cpu_small are sized for this."
    )


def set_cpu_threads(threads: int | str, device: torch.device) -> None:
    """On CPU, a whole number >= 1 fixes torch's thread count (bit-exact reruns need that); ``"auto"`` leaves it."""
    if threads == "auto":
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"cpu_threads={threads!r} is not valid: use 'auto' or a whole number >= 1.")
    if device.type == "cpu":
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# Precision and compilation


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


def autocast_for(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's precision context: autocast to ``dtype``, or nothing at all for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler_for(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler | None:
    """A GradScaler for float16 only: bf16 has fp32's exponent range and needs no loss scaling."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


def should_compile(pref: str, device: torch.device) -> bool:
    """``torch.compile`` by default on CUDA only: at CPU sizes it did not pay for its compile time."""
    if pref == "auto":
        return device.type == "cuda"
    if pref in ("true", "false"):
        return pref == "true"
    raise ValueError(f"compile={pref!r} is not valid: use auto, true or false.")


def enable_tf32(device: torch.device) -> None:
    """TF32 matmuls on CUDA: ~free speed on Ampere+ for whatever still runs in fp32.

    (The GPT has no convolutions, so cuDNN's own TF32 switch does not matter.)
    """
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


# --------------------------------------------------------------------------------------------------
# Distributed data parallel (torchrun)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (``enabled=False``: a plain single process)."""

    enabled: bool = False
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints."""
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """Read torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``; a world of one is not distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(True, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)


def setup_distributed(dist: DistInfo, device_pref: str) -> tuple[torch.device, bool]:
    """This process's device, and whether we created the process group (and so must destroy it).

    Under torchrun each process takes GPU ``local_rank`` (NCCL), or the CPU (gloo) when there is no GPU.
    """
    if not dist.enabled:
        return select_device(device_pref), False
    import torch.distributed as tdist

    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    device = torch.device(f"cuda:{dist.local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if tdist.is_initialized():
        return device, False
    tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return device, True


def teardown_distributed(owns_group: bool) -> None:
    """Destroy the process group if :func:`setup_distributed` created it (a caller's own group is left alone)."""
    if owns_group:
        import torch.distributed as tdist

        tdist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """The mean of ``value`` over all ranks (``value`` itself when not distributed).

    SUM then divide, not ReduceOp.AVG: gloo (CPU) has no AVG.
    """
    if not dist.enabled:
        return value
    import torch.distributed as tdist

    value = value.detach().clone()
    tdist.all_reduce(value, op=tdist.ReduceOp.SUM)
    return value / dist.world_size


def all_reduce_max(value: float, dist: DistInfo, device: torch.device) -> float:
    """The largest ``value`` over all ranks, e.g. elapsed seconds, so every rank stops at the same step."""
    if not dist.enabled:
        return value
    import torch.distributed as tdist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return float(t)


def any_rank(flag: bool, dist: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (a collective: every rank must call it at the same step)."""
    if not dist.enabled:
        return flag
    return all_reduce_max(1.0 if flag else 0.0, dist, device) > 0


def gather_objects(obj: Any, dist: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` (a collective: every rank must call it), or None when not distributed."""
    if not dist.enabled:
        return None
    import torch.distributed as tdist

    out: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model``: gradients are averaged across ranks during backward."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


# --------------------------------------------------------------------------------------------------
# Peak FLOPs (for MFU)

# Dense bf16/fp16 tensor-core peaks (FLOP/s) for the MFU estimate; LLMLAB_PEAK_FLOPS overrides.
GPU_PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
    "4090": 165e12,
    "3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


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
        for key, peak in sorted(GPU_PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):  # "L40S" before "L4"
            if key in name:
                return peak
    return None


# --------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM


class StopSignals:
    """While active, Ctrl-C (SIGINT) and SIGTERM ask for a stop instead of killing the work mid-step.

    ``with StopSignals() as stop:`` ... ``if stop.signal_name: ...`` -- the first signal only records its
    name (``"SIGINT"`` / ``"SIGTERM"``), so the loop can finish the step it is in, save, and stop. A second
    signal raises KeyboardInterrupt at once (``forced`` is then True): pressing Ctrl-C twice always stops.
    The previous handlers are restored on exit. Signal handlers can only be set from the main thread;
    elsewhere (a worker thread) this does nothing and Ctrl-C keeps its usual effect. A signal that is
    ignored (SIG_IGN, e.g. SIGINT for a background job) stays ignored.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.forced = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def install(self) -> None:
        """Take over SIGINT and SIGTERM (main thread only; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            # A signal the parent set to be ignored (a background job's SIGINT) stays ignored.
            if number is not None and number not in self._previous and signal.getsignal(number) != signal.SIG_IGN:
                with contextlib.suppress(ValueError, OSError):
                    self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        """Give the signals back to the handlers they had before :meth:`install`."""
        for number, previous in self._previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def agreed(self, step: int, dist: DistInfo, device: torch.device, every: int = 1) -> str | None:
        """The signal that asked for a stop, or None. Under DDP every rank must stop at the same step, so
        the ranks agree (a collective) every ``every`` steps only, not at each step."""
        if not dist.enabled:
            return self.signal_name
        if step % every:
            return None
        return (self.signal_name or "SIGTERM") if any_rank(self.signal_name is not None, dist, device) else None

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            self.forced = True
            raise KeyboardInterrupt(f"{name} again: stopping at once")
        self.signal_name = name
