"""Precision and compile per machine: runtime.choose_runtime case by case, with the capability queries faked.

Every machine the course meets is one row: bf16 cards, the fp16 cards (T4, V100), cards Triton cannot compile
for, no Triton (Linux or Windows), Apple MPS, CPU; then what a user asks for explicitly, where an impossible
request is refused naming the fix. The last tests check that the Trainer takes its dtype and compile from
this rule and that float16 really goes through torch.amp.GradScaler in the step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmlab import runtime
from llmlab.cli import main
from llmlab.runtime import DeviceFacts, RuntimePlan, choose_runtime
from llmlab.train import Trainer

H100 = DeviceFacts("cuda", "NVIDIA H100 80GB HBM3", (9, 0), triton=True, platform="linux")
A100 = DeviceFacts("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), triton=True, platform="linux")
RTX4090_WINDOWS = DeviceFacts("cuda", "NVIDIA GeForce RTX 4090", (8, 9), triton=False, platform="win32")
A100_NO_TRITON = DeviceFacts("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), triton=False, platform="linux")
T4 = DeviceFacts("cuda", "Tesla T4", (7, 5), triton=True, platform="linux")
V100 = DeviceFacts("cuda", "Tesla V100-SXM2-16GB", (7, 0), triton=True, platform="linux")
P100 = DeviceFacts("cuda", "Tesla P100-PCIE-16GB", (6, 0), triton=True, platform="linux")
MPS_BF16 = DeviceFacts("mps", mps_bf16=True, platform="darwin")
MPS_OLD = DeviceFacts("mps", mps_bf16=False, platform="darwin")
CPU = DeviceFacts("cpu", platform="linux")
CPU_WINDOWS = DeviceFacts("cpu", platform="win32")

BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


@pytest.mark.parametrize(
    "facts, dtype, compiled, note",
    [
        (H100, BF16, True, ""),
        (A100, BF16, True, ""),
        (T4, FP16, True, ""),  # no bf16 tensor cores: fp16 with loss scaling
        (V100, FP16, True, ""),
        (P100, FP16, False, "older than Triton supports"),  # Triton needs compute capability 7.0
        (A100_NO_TRITON, BF16, False, "Triton is not installed (reinstall the CUDA build of torch"),
        (RTX4090_WINDOWS, BF16, False, "pip install triton-windows"),
        (MPS_BF16, FP32, False, ""),  # conservative: fp32 on MPS unless bf16 is asked for
        (MPS_OLD, FP32, False, ""),
        (CPU, FP32, False, ""),
        (CPU_WINDOWS, FP32, False, ""),
    ],
)
def test_auto_choices_per_machine(facts: DeviceFacts, dtype: torch.dtype, compiled: bool, note: str) -> None:
    plan = choose_runtime("auto", "auto", facts)
    assert (plan.dtype, plan.compile) == (dtype, compiled)
    if note:
        assert note in plan.note and "runs eager" in plan.note and plan.note.count("\n") == 0  # one line
    else:
        assert plan.note == ""


@pytest.mark.parametrize(
    "facts, dtype, expected",
    [
        (A100, "float32", FP32),
        (A100, "float16", FP16),  # allowed on a bf16 card too
        (T4, "float16", FP16),
        (V100, "float32", FP32),
        (MPS_BF16, "bfloat16", BF16),  # where MPS runs bf16, asking for it is honoured
        (MPS_OLD, "float32", FP32),
        (CPU, "bfloat16", BF16),  # slow on most CPUs, but it works
        (CPU, "float16", FP16),
    ],
)
def test_explicit_dtypes_that_work_are_honoured(facts: DeviceFacts, dtype: str, expected: torch.dtype) -> None:
    assert choose_runtime(dtype, "false", facts).dtype == expected


@pytest.mark.parametrize(
    "facts, dtype, message",
    [
        (
            T4,
            "bfloat16",
            r"dtype='bfloat16' asked for, but Tesla T4 \(compute capability 7\.5\) has no bfloat16.*"
            r"use dtype=float16",
        ),
        (V100, "bfloat16", r"Tesla V100-SXM2-16GB \(compute capability 7\.0\).*dtype=auto"),
        (
            MPS_OLD,
            "bfloat16",
            r"dtype='bfloat16' asked for, but bfloat16 does not run on this Mac's MPS.*macOS 14.*"
            r"use dtype=float32",
        ),
        (MPS_BF16, "float16", r"dtype='float16' asked for.*use dtype=float32"),
    ],
)
def test_impossible_dtypes_are_refused_with_the_fix(facts: DeviceFacts, dtype: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_runtime(dtype, "auto", facts)


@pytest.mark.parametrize(
    "facts, message",
    [
        (
            A100_NO_TRITON,
            r"compile=true asked for, but torch\.compile cannot run on NVIDIA A100.*Triton is not "
            r"installed.*compile=false",
        ),
        (RTX4090_WINDOWS, r"triton-windows.*Use compile=auto \(eager here\) or compile=false"),
        (P100, r"Tesla P100-PCIE-16GB \(compute capability 6\.0\) is older than Triton supports"),
    ],
)
def test_compile_true_where_it_cannot_work_is_refused(facts: DeviceFacts, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_runtime("auto", "true", facts)


def test_explicit_compile_choices() -> None:
    assert choose_runtime("auto", "true", H100).compile is True
    assert choose_runtime("auto", "true", T4).compile is True
    assert choose_runtime("auto", "true", CPU).compile is True  # CPU / MPS: compiled when asked
    assert choose_runtime("auto", "true", MPS_OLD).compile is True
    off = choose_runtime("auto", "false", A100_NO_TRITON)
    assert off == RuntimePlan(BF16, False, "")  # asked off: no note about Triton
    assert choose_runtime("auto", "false", H100).compile is False


@pytest.mark.parametrize("dtype, compile, name", [("fp8", "auto", "dtype='fp8'"), ("auto", "yes", "compile='yes'")])
def test_invalid_values_name_the_value_and_the_choices(dtype: str, compile: str, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name} is not valid: use auto"):
        choose_runtime(dtype, compile, CPU)


def test_probe_reads_the_capability_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(runtime, "_triton_available", lambda: False)
    facts = runtime.probe_device(torch.device("cuda"))
    assert (facts.device_type, facts.name, facts.capability, facts.triton) == ("cuda", "Tesla T4", (7, 5), False)
    plan = runtime.runtime_plan("auto", "auto", torch.device("cuda"))
    assert plan.dtype == FP16 and plan.compile is False and "Triton is not installed" in plan.note
    assert runtime.probe_device(torch.device("cpu")) == DeviceFacts("cpu")


def test_triton_probe_matches_an_import() -> None:
    try:
        import triton  # noqa: F401

        importable = True
    except ImportError:
        importable = False
    assert runtime._triton_available() is importable


# ---- the Trainer takes its dtype and compile from the rule ----------------------------------------------


def _pretend(monkeypatch: pytest.MonkeyPatch, facts: DeviceFacts) -> None:
    """The CPU the tests run on answers the capability queries like ``facts``' machine."""
    monkeypatch.setattr(runtime, "probe_device", lambda device: facts)


def test_trainer_refuses_an_impossible_dtype_before_training(
    char_data: Path, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pretend(monkeypatch, T4)
    with pytest.raises(ValueError, match="dtype='bfloat16' asked for, but Tesla T4"):
        Trainer(tiny_config(dtype="bfloat16"), char_data, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_cli_says_it_in_one_line(
    char_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _pretend(monkeypatch, A100_NO_TRITON)
    args = ["train", "--data", str(char_data), "--out", str(tmp_path / "out"), "--set", "device=cpu", "--quiet"]
    assert main([*args, "--set", "compile=true", "--set", "max_iters=2", "--set", "warmup_iters=0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: compile=true asked for") and "compile=false" in err[0]


def test_trainer_uses_the_plan_and_says_why_compile_is_off(
    char_data: Path, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An A100 without Triton: bf16 (autocast works on the CPU too), eager, and the note in the run's messages.
    _pretend(monkeypatch, A100_NO_TRITON)
    trainer = Trainer(tiny_config(dtype="auto", compile="auto", max_iters=2), char_data, tmp_path / "out")
    assert trainer.dtype == BF16 and trainer.compiled is False and trainer.fwd_model is trainer.raw_model
    assert trainer.scaler is None  # bf16 needs no loss scaling
    result = trainer.fit()
    assert any("torch.compile is off because Triton is not installed" in m for m in result.messages)


def test_float16_steps_go_through_the_grad_scaler(
    char_data: Path, tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A T4's choice (fp16) on the CPU: the step must scale the loss, unscale before clipping, step and update.
    _pretend(monkeypatch, T4)
    trainer = Trainer(tiny_config(dtype="auto", compile="false", grad_accum_steps=2), char_data, tmp_path / "out")
    assert trainer.dtype == FP16 and isinstance(trainer.scaler, torch.amp.GradScaler)
    calls: list[str] = []
    scaler = trainer.scaler
    for name in ("scale", "unscale_", "step", "update"):
        original = getattr(scaler, name)
        monkeypatch.setattr(scaler, name, lambda *a, _n=name, _f=original, **k: (calls.append(_n), _f(*a, **k))[1])
    before = [p.detach().clone() for p in trainer.raw_model.parameters()]
    loss = trainer.train_step(1e-3)
    assert calls == ["scale", "scale", "unscale_", "step", "update"]  # one scale per micro-batch
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.raw_model.parameters()))  # it stepped


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_real_card_gets_what_its_capability_allows(char_data: Path, tiny_config, tmp_path: Path) -> None:
    device = torch.device("cuda")
    facts = runtime.probe_device(device)
    plan = runtime.runtime_plan("auto", "auto", device)
    assert plan.dtype == (BF16 if facts.capability >= (8, 0) else FP16)
    assert plan.compile == (facts.triton and facts.capability >= (7, 0))
    # fp16 with the GradScaler trains on any CUDA card (forced here, also on bf16 cards).
    result = Trainer(tiny_config(device="cuda", dtype="float16", max_iters=30), char_data, tmp_path / "fp16").fit()
    assert result.evals[-1].val_loss < result.evals[0].val_loss
