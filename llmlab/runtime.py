"""Where and how training runs: device, precision, compilation, torchrun (DDP), peak FLOPs.

Everything here depends on the machine, not on the model or the data, so the training loop in
:mod:`llmlab.train` can read the same on a laptop CPU and on eight GPUs:

- :func:`select_device` / :func:`explain_device`  CUDA, then Apple MPS, then CPU (and why not a GPU)
- :class:`DeviceFacts`, :func:`probe_device`, :func:`choose_runtime`, :func:`runtime_plan`  precision and
  ``torch.compile`` per machine: one pure rule (:func:`choose_runtime`) fed by the capability queries
- :func:`autocast_for`, :func:`grad_scaler_for`  bf16/fp16 autocast on CUDA, fp32 elsewhere
- :func:`compile_model`, :func:`enable_tf32`  ``torch.compile`` and TF32 matmuls where they pay
- :class:`DistInfo`, :func:`setup_distributed`, :func:`teardown_distributed`, :func:`all_reduce_mean`,
  :func:`all_reduce_max`, :func:`gather_objects`, :func:`wrap_ddp`  the torchrun side of DDP
- :func:`peak_flops_for`, :func:`peak_flops_for_name`  the dense peak FLOP/s an MFU figure divides by
- :func:`stop_agreed`  under torchrun, every rank stops at the same step after Ctrl-C / SIGTERM
  (the handlers themselves are in :mod:`llmlab.signals`)

Imports only torch and the standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import platform
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from llmlab.i18n import tr

__all__ = [
    "tune_cpu_allocator",
    "OutOfMemoryError",
    "select_device",
    "explain_device",
    "DeviceFacts",
    "RuntimePlan",
    "probe_device",
    "choose_runtime",
    "runtime_plan",
    "autocast_for",
    "grad_scaler_for",
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
    "peak_flops_for_name",
    "stop_agreed",
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
        return tr("why.cpu_wheel", version=torch.__version__)
    return tr("why.no_gpu", version=torch.__version__, cuda=torch.version.cuda)


def explain_device(device: torch.device) -> str:
    """One line saying where training runs and, on CPU, why not on a GPU."""
    if device.type == "cuda":
        return f"Training on CUDA ({torch.cuda.get_device_name(device)})."
    if device.type == "mps":
        return "Training on Apple MPS (float32 unless dtype=bfloat16 is asked for)."
    return tr("note.cpu", threads=torch.get_num_threads(), why=_why_no_cuda())


def set_cpu_threads(threads: int | str, device: torch.device) -> None:
    """On CPU, a whole number >= 1 fixes torch's thread count (bit-exact reruns need that); ``"auto"`` leaves it."""
    if threads == "auto":
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"cpu_threads={threads!r} is not valid: use 'auto' or a whole number >= 1.")
    if device.type == "cpu":
        torch.set_num_threads(threads)


# glibc's malloc gives each block above a threshold (128 KB at first, adjusted as blocks are freed) its own
# fresh pages from the kernel and returns free memory at the heap's top beyond a trim threshold. A CPU
# training step allocates and frees many activation tensors of 0.1-10 MB, so with those defaults every step
# faults in thousands of fresh 4 KB pages: 6,600-9,000 per cpu_modern step here, 25-43 ms of system time.
# Raising both thresholds keeps the freed memory in the process for the next step: 40-260 faults and 2-3 ms
# per step. The wall-clock gain is smaller than this machine's noise (0.94-1.24x per pair of processes,
# `python bench/allocator.py`; docs/results.md).
MALLOC_MMAP_THRESHOLD = 64 << 20  # blocks up to 64 MB come from the heap and are reused
MALLOC_TRIM_THRESHOLD = 256 << 20  # keep up to 256 MB of freed memory instead of handing it back each step
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_allocator_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Raise glibc malloc's mmap and trim thresholds for this process, once; True where that was done.

    A no-op (False) off Linux or with another C library. Process-wide: the memory a step frees stays
    reserved for the next one (at most ``MALLOC_TRIM_THRESHOLD`` beyond what is in use).
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL("libc.so.6")
                _allocator_tuned = bool(
                    libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
                )
            except (OSError, AttributeError):
                pass
    return _allocator_tuned


# --------------------------------------------------------------------------------------------------
# Precision and compilation


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COMPILE_CHOICES = ("auto", "true", "false")
TRITON_MIN_CAPABILITY = (7, 0)  # Triton (torch.compile's GPU code generator) supports Volta and newer
BF16_MIN_CAPABILITY = (8, 0)  # bfloat16 tensor cores: Ampere and newer


@dataclass(frozen=True)
class DeviceFacts:
    """What the machine can do, as plain values: the input of :func:`choose_runtime` (tests fake it)."""

    device_type: str  # "cuda", "mps" or "cpu"
    name: str = ""  # the card's name on CUDA, e.g. "NVIDIA A100-SXM4-80GB" (for messages)
    capability: tuple[int, int] | None = None  # CUDA compute capability, e.g. (8, 0); None elsewhere
    triton: bool = False  # the triton package is importable (torch.compile's GPU backend)
    platform: str = sys.platform  # "linux", "darwin", "win32": only changes what a note suggests
    mps_bf16: bool = False  # Apple MPS: bfloat16 autocast works here (macOS 14+ with a recent torch)

    @property
    def where(self) -> str:
        """The device in words, for messages: ``"Tesla T4 (compute capability 7.5)"``."""
        if self.device_type == "cuda":
            cap = f" (compute capability {self.capability[0]}.{self.capability[1]})" if self.capability else ""
            return f"{self.name or 'this GPU'}{cap}"
        return "Apple MPS" if self.device_type == "mps" else "the CPU"


@dataclass(frozen=True)
class RuntimePlan:
    """The compute dtype and whether to ``torch.compile``; ``note``: one line when a default had to give way."""

    dtype: torch.dtype
    compile: bool
    note: str = ""


def _triton_available() -> bool:
    # find_spec: knowing that it is installed is enough here, and importing triton takes seconds.
    return importlib.util.find_spec("triton") is not None


def _mps_bf16_works() -> bool:
    """Whether a bfloat16 autocast matmul runs on MPS (older macOS / torch disable it with a warning)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.autocast("mps", dtype=torch.bfloat16):
                a = torch.ones(2, 2, device="mps")
                return (a @ a).dtype == torch.bfloat16
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


def probe_device(device: torch.device) -> DeviceFacts:
    """Ask torch what ``device`` supports (the only impure part of the precision/compile choice)."""
    if device.type == "cuda":
        return DeviceFacts(
            "cuda",
            name=torch.cuda.get_device_name(device),
            capability=tuple(torch.cuda.get_device_capability(device)),  # type: ignore[arg-type]
            triton=_triton_available(),
        )
    if device.type == "mps":
        return DeviceFacts("mps", mps_bf16=_mps_bf16_works())
    return DeviceFacts("cpu")


def _no_compile_reason(facts: DeviceFacts) -> str:
    """Why ``torch.compile`` cannot run on this CUDA device ("" when it can)."""
    if not facts.triton:
        fix = (
            "pip install triton-windows (matching your torch version)"
            if facts.platform == "win32"
            else "reinstall the CUDA build of torch, which brings it (see the README)"
        )
        return f"Triton is not installed ({fix})"
    if facts.capability is not None and facts.capability < TRITON_MIN_CAPABILITY:
        return f"{facts.where} is older than Triton supports (compute capability 7.0, Volta, or newer)"
    return ""


def _reduced_dtype_problem(dtype: torch.dtype, facts: DeviceFacts) -> str:
    """Why ``dtype`` (bfloat16 / float16) cannot be used on this device ("" when it can), with the fix."""
    if dtype == torch.bfloat16:
        if facts.device_type == "cuda" and facts.capability is not None and facts.capability < BF16_MIN_CAPABILITY:
            return (
                f"{facts.where} has no bfloat16 tensor cores (they need compute capability 8.0, Ampere or newer): "
                f"use dtype=float16 (mixed precision with loss scaling) or dtype=auto, which picks it"
            )
        if facts.device_type == "mps" and not facts.mps_bf16:
            return (
                "bfloat16 does not run on this Mac's MPS (it needs macOS 14 or newer and a recent PyTorch): "
                "use dtype=float32 (or auto)"
            )
    if dtype == torch.float16 and facts.device_type == "mps":
        return (
            "llmlab trains on Apple MPS in float32, or bfloat16 where it works; float16 would need loss scaling, "
            "which llmlab does not use on MPS: use dtype=float32 (or auto), or dtype=bfloat16 on macOS 14+"
        )
    return ""


def choose_runtime(dtype: str, compile: str, facts: DeviceFacts) -> RuntimePlan:
    """The compute dtype and compile decision for a machine described by ``facts`` (a pure function).

    ``dtype="auto"``: bfloat16 on CUDA GPUs with bf16 tensor cores (compute capability >= 8.0), float16
    (with a GradScaler, see :func:`grad_scaler_for`) on older ones such as the T4 and V100, float32 on
    Apple MPS (the conservative choice) and on CPUs (bf16 autocast is slower than fp32 on most CPUs).
    ``compile="auto"``: on CUDA when Triton is installed and supports the card, else eager with a note;
    eager on MPS and CPU (asking with ``compile=true`` is honoured there). An explicit request the machine
    cannot honour (bfloat16 on a T4, compile=true without Triton) is a ValueError naming the fix.
    """
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not valid: use auto, float32, bfloat16 or float16.")
    if compile not in COMPILE_CHOICES:
        raise ValueError(f"compile={compile!r} is not valid: use auto, true or false.")
    cuda = facts.device_type == "cuda"
    if dtype == "auto":
        if not cuda:
            chosen = torch.float32
        else:
            chosen = torch.bfloat16 if not _reduced_dtype_problem(torch.bfloat16, facts) else torch.float16
    else:
        chosen = DTYPES[dtype]
        problem = _reduced_dtype_problem(chosen, facts)
        if problem:
            raise ValueError(f"dtype={dtype!r} asked for, but {problem}.")

    note = ""
    if compile == "false":
        compiled = False
    elif not cuda:  # CPU / MPS: eager by default (compiling did not pay at CPU sizes); asked for, it is tried
        compiled = compile == "true"
    else:
        reason = _no_compile_reason(facts)
        if reason and compile == "true":
            raise ValueError(
                f"compile=true asked for, but torch.compile cannot run on {facts.where}: {reason}. "
                f"Use compile=auto (eager here) or compile=false."
            )
        compiled = not reason
        if reason:
            note = f"note: torch.compile is off because {reason}; training runs eager (slower, same training)."
    return RuntimePlan(chosen, compiled, note)


def runtime_plan(dtype: str, compile: str, device: torch.device) -> RuntimePlan:
    """:func:`choose_runtime` for this machine's ``device`` (what :class:`llmlab.train.Trainer` uses)."""
    return choose_runtime(dtype, compile, probe_device(device))


def autocast_for(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's precision context: autocast to ``dtype``, or nothing at all for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler_for(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler | None:
    """A GradScaler for float16 only: bf16 has fp32's exponent range and needs no loss scaling."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


def compile_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``torch.compile(model)``, with C++ wrapper code on the CPU.

    On a CPU the step of a course-sized model is short (about 50 ms at nanoGPT's CPU configuration), so
    inductor's Python wrapper, which calls each generated kernel in turn, is a visible share of it; the C++
    wrapper calls them from compiled code instead. Measured at that configuration on 2 cores: about 3% faster
    steps (1.03x in ``bench/train.py throughput --compile``), for about 10 s more compile time once
    (docs/results.md). GPUs keep the default wrapper.
    """
    if device.type == "cpu":
        return torch.compile(model, options={"cpp_wrapper": True})
    return torch.compile(model)


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

# Dense (not the 2:4-sparsity figure) bf16 tensor-core peaks in FLOP/s, fp16 on cards without bf16 (T4, V100),
# from NVIDIA's data sheets. Matched in this order against torch.cuda.get_device_name() as whole words
# (case-insensitive; "A10" is not "A100" nor "A10G"), most specific first: "H100 PCIe" before "H100". A card
# not listed has no MFU figure ("unknown peak") rather than a wrong one; LLMLAB_PEAK_FLOPS sets any peak by hand.
GPU_PEAK_FLOPS = {
    "GH200": 989e12,
    "H200 NVL": 835e12,
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM ("NVIDIA H100 80GB HBM3")
    "A100": 312e12,  # SXM and PCIe
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10": 125e12,  # the A10 (the cloud's A10G is another card: not listed)
    "RTX 4090": 165e12,  # fp16/bf16 with fp32 accumulate (the training setting)
    "RTX 3090": 71e12,
    "V100S": 130e12,  # fp16
    "V100-PCIE": 112e12,  # fp16
    "V100": 125e12,  # fp16, SXM2
    "T4": 65e12,  # fp16
}
# Variants whose name contains a listed card's but whose peak differs: unknown rather than wrong.
_VARIANTS = ("RTX 4090 D", "RTX 3090 TI")


def peak_flops_for_name(name: str) -> float | None:
    """The dense bf16 (fp16 on T4/V100) peak FLOP/s of a CUDA card called ``name``, or None when not listed."""
    upper = " ".join(name.upper().split())
    if any(_has_word(upper, variant) for variant in _VARIANTS):
        return None
    for key, peak in GPU_PEAK_FLOPS.items():  # in order: the most specific names first
        if _has_word(upper, key.upper()):
            return peak
    return None


def _has_word(text: str, word: str) -> bool:
    """``word`` in ``text``, not glued to a letter or digit on either side ("A10" is not in "A100")."""
    return re.search(rf"(?<![A-Z0-9]){re.escape(word)}(?![A-Z0-9])", text) is not None


def peak_flops_for(device: torch.device) -> float | None:
    """The device's peak FLOP/s for the MFU figure, or None when unknown (CPU unless LLMLAB_PEAK_FLOPS is set)."""
    env = os.environ.get("LLMLAB_PEAK_FLOPS")
    if env:
        try:
            return float(env)
        except ValueError:
            raise ValueError(f"LLMLAB_PEAK_FLOPS={env!r} is not a number; e.g. LLMLAB_PEAK_FLOPS=135e9.") from None
    if device.type == "cuda":
        return peak_flops_for_name(torch.cuda.get_device_name(device))
    return None


# --------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM under torchrun (the handlers themselves: llmlab.signals)


def stop_agreed(signal_name: str | None, step: int, dist: DistInfo, device: torch.device, every: int = 1) -> str | None:
    """The signal that asked this process to stop (``StopSignals.signal_name``), or None. Under DDP every rank
    must stop at the same step, so the ranks agree (a collective) every ``every`` steps only, not at each step."""
    if not dist.enabled:
        return signal_name
    if step % every:
        return None
    return (signal_name or "SIGTERM") if any_rank(signal_name is not None, dist, device) else None
