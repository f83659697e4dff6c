"""runtime.py: device, dtype/autocast, GradScaler, compile, threads, torchrun info, all-reduce helpers, peak FLOPs."""

from __future__ import annotations

import ast
import contextlib
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmlab import runtime
from llmlab.runtime import (
    DistInfo,
    all_reduce_max,
    all_reduce_mean,
    autocast_for,
    dist_from_env,
    explain_device,
    gather_objects,
    grad_scaler_for,
    peak_flops_for,
    runtime_plan,
    select_device,
    set_cpu_threads,
    setup_distributed,
)


def test_select_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert select_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="device='cuda'.*(no CUDA support|sees no GPU)"):
        select_device("cuda")
    with pytest.raises(ValueError, match="mps"):
        select_device("mps")
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert select_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto").type == "cuda"
    assert select_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="only 2 CUDA"):
        select_device("cuda:2")
    assert select_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device='tpu' is not valid"):
        select_device("tpu")


def test_explain_cpu_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", None)
    msg = explain_device(torch.device("cpu"))
    assert "Training on CPU" in msg and "no CUDA support" in msg and "CUDA build" in msg
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    assert "sees no GPU" in explain_device(torch.device("cpu"))


def test_runtime_plan_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    # runtime_plan asks the device, then applies runtime.choose_runtime (tested case by case in test_runtime_selection).
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    assert runtime_plan("auto", "false", cuda).dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert runtime_plan("auto", "false", cuda).dtype == torch.float16  # pre-Ampere GPUs: fp16 + GradScaler
    assert runtime_plan("auto", "false", cpu).dtype == torch.float32
    assert runtime_plan("bfloat16", "false", cpu).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype='fp8'"):
        runtime_plan("fp8", "false", cpu)


def test_autocast_and_grad_scaler_follow_the_dtype() -> None:
    cpu = torch.device("cpu")
    assert isinstance(autocast_for(cpu, torch.float32), contextlib.nullcontext)  # fp32: no autocast at all
    with autocast_for(cpu, torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert isinstance(grad_scaler_for(cpu, torch.float16), torch.amp.GradScaler)
    assert grad_scaler_for(cpu, torch.bfloat16) is None and grad_scaler_for(cpu, torch.float32) is None


def test_runtime_plan_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(runtime, "_triton_available", lambda: True)
    assert runtime_plan("float32", "auto", torch.device("cuda")).compile is True
    monkeypatch.setattr(runtime, "_triton_available", lambda: False)
    assert runtime_plan("float32", "auto", torch.device("cuda")).compile is False  # no Triton: eager, with a note
    assert runtime_plan("float32", "auto", torch.device("cpu")).compile is False
    assert runtime_plan("float32", "true", torch.device("cpu")).compile is True
    assert runtime_plan("float32", "false", torch.device("cuda")).compile is False
    with pytest.raises(ValueError, match="compile='yes'"):
        runtime_plan("float32", "yes", torch.device("cpu"))


def test_set_cpu_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    set_cpu_threads("auto", torch.device("cpu"))
    set_cpu_threads(3, torch.device("cpu"))
    set_cpu_threads(3, torch.device("cuda"))  # threads only matter on CPU
    assert calls == [3]
    for bad in (0, True, "many", 1.5):
        with pytest.raises(ValueError, match="cpu_threads="):
            set_cpu_threads(bad, torch.device("cpu"))  # type: ignore[arg-type]


def test_dist_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert dist_from_env() == DistInfo() and DistInfo().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = dist_from_env()
    assert (info.enabled, info.rank, info.local_rank, info.world_size, info.is_main) == (True, 3, 1, 4, False)


def test_single_process_collectives_are_identities() -> None:
    single, cpu = DistInfo(), torch.device("cpu")
    t = torch.tensor(2.5)
    assert all_reduce_mean(t, single) is t
    assert all_reduce_max(1.5, single, cpu) == 1.5
    assert gather_objects({"step": 3}, single) is None
    assert setup_distributed(single, "cpu") == (torch.device("cpu"), False)


def test_stop_agreed_single_process_is_the_signal_itself() -> None:
    assert runtime.stop_agreed("SIGINT", 5, DistInfo(), torch.device("cpu"), every=10) == "SIGINT"
    assert runtime.stop_agreed(None, 10, DistInfo(), torch.device("cpu"), every=10) is None


def test_any_rank_single_process() -> None:
    assert runtime.any_rank(True, DistInfo(), torch.device("cpu")) is True
    assert runtime.any_rank(False, DistInfo(), torch.device("cpu")) is False


def test_peak_flops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMLAB_PEAK_FLOPS", raising=False)
    assert peak_flops_for(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA L40S")
    assert peak_flops_for(torch.device("cuda")) == runtime.GPU_PEAK_FLOPS["L40S"]  # not L4's
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some Future GPU")
    assert peak_flops_for(torch.device("cuda")) is None
    monkeypatch.setenv("LLMLAB_PEAK_FLOPS", "135e9")
    assert peak_flops_for(torch.device("cpu")) == 135e9
    monkeypatch.setenv("LLMLAB_PEAK_FLOPS", "fast")
    with pytest.raises(ValueError, match="LLMLAB_PEAK_FLOPS='fast'"):
        peak_flops_for(torch.device("cpu"))


@pytest.mark.parametrize(
    "name, peak",
    [
        # Names as torch.cuda.get_device_name() reports them; dense bf16 (fp16 on T4/V100) data-sheet peaks.
        ("NVIDIA H100 80GB HBM3", 989e12),  # SXM
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40", 181e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA GeForce RTX 3090", 71e12),
        ("Tesla T4", 65e12),
        ("Tesla V100-SXM2-16GB", 125e12),
        ("Tesla V100-PCIE-32GB", 112e12),
        ("Tesla V100S-PCIE-32GB", 130e12),
        # Not listed, or a variant with another peak: unknown, never a neighbour's number.
        ("NVIDIA A10G", None),
        ("NVIDIA RTX A1000", None),
        ("NVIDIA GeForce RTX 4090 D", None),
        ("NVIDIA GeForce RTX 3090 Ti", None),
        ("NVIDIA B200", None),
        ("NVIDIA GeForce GTX 1080", None),
    ],
)
def test_peak_flops_by_card_name(name: str, peak: float | None) -> None:
    assert runtime.peak_flops_for_name(name) == peak
    assert runtime.peak_flops_for_name(name.lower()) == peak  # case does not matter


def _llmlab_imports(module: str) -> set[str]:
    """Every llmlab module ``module`` imports, at top level or inside functions."""
    import llmlab

    path = Path(llmlab.__file__).parent / f"{module}.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmlab"):
            found.add(node.module if node.module != "llmlab" else f"llmlab.{node.names[0].name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("llmlab"))
    return found


@pytest.mark.parametrize(
    "module, allowed",
    [
        ("runtime", {"llmlab.config", "llmlab.i18n"}),
        ("callbacks", {"llmlab.config", "llmlab.metrics", "llmlab.failures", "llmlab.trainer_view"}),
        (
            "failures",
            {"llmlab.config", "llmlab.metrics", "llmlab.i18n", "llmlab.checkpoint_state", "llmlab.trainer_view"},
        ),
        (
            "checkpoint",
            {
                "llmlab.config",
                "llmlab.metrics",
                "llmlab.tokenizers",
                "llmlab.model",
                "llmlab.checkpoint_state",
                "llmlab.files",
                "llmlab.i18n",
            },
        ),
        ("checkpoint_state", {"llmlab.config", "llmlab.metrics", "llmlab.tokenizers", "llmlab.model"}),
    ],
)
def test_lower_floors_do_not_import_upward(module: str, allowed: set[str]) -> None:
    assert _llmlab_imports(module) <= allowed


_FAULTS_CHILD = """
import resource, sys, torch
from llmlab import runtime
tuned = runtime.tune_cpu_allocator() if sys.argv[1] == "tune" else False
n = (40 << 20) // 4  # 40 MB: above glibc's largest automatic mmap threshold (32 MB), below llmlab's 64 MB
torch.empty(n).fill_(1.0)  # the first one faults in either case
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(n).fill_(1.0)  # allocate, touch every page, free
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc's malloc only"
)
def test_tuned_allocator_reuses_freed_memory_instead_of_faulting_in_fresh_pages() -> None:
    # glibc's defaults map each 40 MB tensor afresh (10,240 page faults each); after tune_cpu_allocator
    # the freed block is reused from the heap. Separate processes: the setting is process-wide.
    def faults(mode: str) -> tuple[str, int]:
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS_CHILD, mode], capture_output=True, text=True, check=True, timeout=120
        )
        tuned, count = done.stdout.split()
        return tuned, int(count)

    plain_tuned, plain = faults("plain")
    tuned_flag, tuned = faults("tune")
    assert (plain_tuned, tuned_flag) == ("False", "True")
    assert plain > 20 * 5000  # 20 tensors of 10,240 pages, mapped afresh each time
    assert tuned < plain / 4  # the first few reuses may fault (1-3 tensors' pages seen here), not all twenty


def test_allocator_tuning_is_done_once_and_reported() -> None:
    first = runtime.tune_cpu_allocator()
    assert runtime.tune_cpu_allocator() is first  # idempotent: the same answer, nothing applied twice
    assert first == (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
