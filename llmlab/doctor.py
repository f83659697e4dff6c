"""``llmlab doctor`` (``make gpu-check``): check a CUDA GPU end to end and write what it measured.

Without a CUDA GPU it says so in one line (and what to do instead) and exits 0 at once. With one it:

1. records the card (name, compute capability, memory), the torch / CUDA / Triton versions and the
   precision and compile choice (:func:`llmlab.runtime.runtime_plan`);
2. runs the tests marked ``cuda`` (``pytest -m cuda tests``) when the repository's ``tests/`` folder is there;
3. trains ``gpt2_124m`` for a few dozen steps on the embedded Shakespeare with GPT-2's BPE (read offline from
   :mod:`llmlab.gpt2_files`), bf16 where the card has it and ``torch.compile`` on, and measures tokens/s,
   MFU against the card's dense peak (:func:`llmlab.runtime.peak_flops_for`; "unknown peak" for a card not
   in the table), peak memory, the compile time and whether the loss went down;
4. writes the report as markdown and JSON (``doctor_report.md`` / ``doctor_report.json`` by default).

The pieces are separate so they can be tested without a GPU: :func:`measure_training` runs on any device,
:func:`build_report` and :func:`render_markdown` take plain values.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from llmlab.callbacks import Callback, EvalInfo, StepInfo
from llmlab.config import Config, get_preset
from llmlab.trainer_view import TrainerView

__all__ = [
    "GOAL_MFU",
    "no_cuda_line",
    "gpu_facts",
    "doctor_config",
    "measure_training",
    "mfu",
    "run_cuda_tests",
    "build_report",
    "render_markdown",
    "write_report",
    "run",
]

GOAL_MFU = 0.50  # the goal: GPT-2 124M at >= 50% MFU with bf16 + torch.compile on one H100
DEFAULT_STEPS = 50
WARMUP_WINDOWS = 1  # log windows left out of tokens/s: the first holds the compile and CUDA warm-up
REPO = Path(__file__).resolve().parents[1]  # the checkout, when llmlab is installed with `pip install -e`


def no_cuda_line() -> str | None:
    """The one line printed where there is no CUDA GPU (None when there is one)."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        why = f"this torch ({torch.__version__}) is a CPU-only build"
    else:
        why = f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU (check `nvidia-smi`)"
    mps = " Apple MPS is available: `llmlab train` uses it by itself." if _mps_available() else ""
    return (
        f"llmlab doctor: no CUDA GPU here ({why}), so there is nothing to check; `make test` checks the CPU path, "
        f"and on a machine with an NVIDIA GPU `make gpu-check` runs this check.{mps}"
    )


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def gpu_facts(device: torch.device) -> dict[str, Any]:
    """The card and the software stack, as plain values for the report."""
    from llmlab import runtime
    from llmlab.gpt2_files import find_gpt2_file

    props = torch.cuda.get_device_properties(device)
    plan = runtime.runtime_plan("auto", "auto", device)
    try:
        import triton

        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "card": torch.cuda.get_device_name(device),
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "gpus_visible": torch.cuda.device_count(),
        "driver": _driver_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dtype": str(plan.dtype).removeprefix("torch."),
        "compile": plan.compile,
        "plan_note": plan.note,
        "gpt2_vocab": str(find_gpt2_file("vocab.bpe")),
    }


def _driver_version() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def doctor_config(steps: int = DEFAULT_STEPS, device: str = "cuda") -> Config:
    """``gpt2_124m`` shortened to ``steps`` optimizer steps (one micro-batch each), evaluated at the start and end."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 20:
        raise ValueError(f"steps={steps!r} is not valid: use a whole number >= 20 (tokens/s needs a few log windows).")
    return get_preset("gpt2_124m").override(
        max_iters=steps,
        warmup_iters=10,
        grad_accum_steps=1,
        eval_interval=steps,
        eval_iters=5,
        log_interval=10,
        device=device,
        dtype="auto",
        compile="auto",
    )


class _Recorder(Callback):
    """Keeps what the report needs: every step's wall time, the log lines and the evaluations."""

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.steps: list[StepInfo] = []
        self.evals: list[EvalInfo] = []

    def on_step_timed(self, trainer: TrainerView, step: int, seconds: float) -> None:
        self.step_seconds.append(seconds)

    def on_step_end(self, trainer: TrainerView, info: StepInfo) -> None:
        self.steps.append(info)

    def on_eval(self, trainer: TrainerView, info: EvalInfo) -> None:
        self.evals.append(info)


def mfu(flops_per_token: float, tokens_per_sec: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak; None when the peak is unknown."""
    if not peak_flops or peak_flops <= 0:
        return None
    return flops_per_token * tokens_per_sec / peak_flops


def measure_training(config: Config, data_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Train ``config`` on ``data_dir`` and return what the report shows (runs on any device).

    tokens/s is the median over the log windows after the first (which holds the compile); the compile time
    is the first training step's wall time minus the median step time (the evaluation at step 0 compiles its
    own graph before that, and is not counted: ``wall_seconds`` holds the whole run).
    """
    from llmlab import runtime
    from llmlab.train import Trainer

    recorder = _Recorder()
    trainer = Trainer(config, data_dir, out_dir, callbacks=[recorder], oom_retry=True)
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    started = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - started
    steady = [s.tokens_per_sec for s in recorder.steps[WARMUP_WINDOWS:]] or [s.tokens_per_sec for s in recorder.steps]
    tokens_per_sec = statistics.median(steady) if steady else 0.0
    later_steps = recorder.step_seconds[1:] or recorder.step_seconds
    step_s = statistics.median(later_steps) if later_steps else 0.0
    first_s = recorder.step_seconds[0] if recorder.step_seconds else 0.0
    peak = runtime.peak_flops_for(trainer.device)
    tc, mc = trainer.config.train, trainer.config.model
    first_val, last_val = recorder.evals[0].val_loss, recorder.evals[-1].val_loss
    return {
        "preset_model": f"depth {mc.depth}, {mc.num_heads} heads, embedding {mc.embedding_size}, block {mc.block_size}",
        "parameters": trainer.raw_model.num_parameters(),
        "device": str(trainer.device),
        "dtype": str(trainer.dtype).removeprefix("torch."),
        "compiled": trainer.compiled,
        "steps": result.final_step,
        "tokens_per_step": tc.batch_size * tc.grad_accum_steps * mc.block_size,
        "batch_size": tc.batch_size,
        "grad_accum_steps": tc.grad_accum_steps,
        "tokens_per_sec": tokens_per_sec,
        "window_tokens_per_sec": [s.tokens_per_sec for s in recorder.steps],
        "flops_per_token": trainer.flops_per_token,
        "peak_flops": peak,
        "peak_source": "LLMLAB_PEAK_FLOPS" if os.environ.get("LLMLAB_PEAK_FLOPS") else "table",
        "mfu": mfu(trainer.flops_per_token, tokens_per_sec, peak),
        "first_step_seconds": first_s,
        "median_step_seconds": step_s,
        "compile_seconds": max(first_s - step_s, 0.0) if trainer.compiled else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(trainer.device) / 2**30 if cuda else None,
        "train_loss_first": recorder.steps[0].loss if recorder.steps else None,
        "train_loss_last": recorder.steps[-1].loss if recorder.steps else None,
        "val_loss_first": first_val,
        "val_loss_last": last_val,
        "loss_fell": last_val < first_val,
        "wall_seconds": seconds,
        "messages": list(result.messages),
    }


def run_cuda_tests(tests_dir: Path | None = None, timeout: float = 1800.0) -> dict[str, Any]:
    """``pytest -m cuda`` on the repository's tests (skipped, with the reason, where they are not installed)."""
    tests_dir = REPO / "tests" if tests_dir is None else tests_dir
    if not tests_dir.is_dir():
        return {
            "status": "skipped",
            "summary": f"no tests folder at {tests_dir} (llmlab installed without the checkout)",
        }
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"status": "skipped", "summary": "pytest is not installed (pip install -e '.[dev]' installs it)"}
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", str(tests_dir)]
    try:
        done = subprocess.run(command, cwd=tests_dir.parent, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "summary": f"timed out after {timeout:.0f} s", "seconds": timeout}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)), "")
    # Exit status 5: no test was selected (none marked cuda): not a failure of the GPU.
    status = "passed" if done.returncode == 0 else "skipped" if done.returncode == 5 else "failed"
    report = {"status": status, "summary": summary or f"pytest exit status {done.returncode}"}
    report["seconds"] = round(time.perf_counter() - started, 1)
    if status == "failed":
        report["output_tail"] = "\n".join(lines[-40:])
    return report


def build_report(facts: dict[str, Any], tests: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """Everything in one plain dict (the JSON report), with a verdict: ``ok`` and the problems found."""
    problems = []
    if tests.get("status") == "failed":
        problems.append(f"CUDA tests failed: {tests.get('summary', '')}")
    if "error" in training:
        problems.append(f"training failed: {training['error']}")
    elif not training.get("loss_fell"):
        problems.append(
            f"the validation loss did not fall ({training.get('val_loss_first')} -> {training.get('val_loss_last')})"
        )
    value = training.get("mfu")
    goal = {
        "mfu": GOAL_MFU,
        "what": "GPT-2 124M, bf16 + torch.compile, one H100",
        "met": None if value is None else value >= GOAL_MFU,
    }
    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "facts": facts,
        "cuda_tests": tests,
        "training": training,
        "goal": goal,
        "ok": not problems,
        "problems": problems,
    }


def _fmt(value: float | None, spec: str, unit: str = "", missing: str = "n/a") -> str:
    return missing if value is None else f"{value:{spec}}{unit}"


def _mfu_text(training: dict[str, Any]) -> str:
    peak = training.get("peak_flops")
    if not peak:
        return (
            "unknown peak (this card is not in llmlab.runtime.GPU_PEAK_FLOPS; set LLMLAB_PEAK_FLOPS to its dense "
            "bf16 FLOP/s, e.g. LLMLAB_PEAK_FLOPS=312e12, to get the figure)"
        )
    source = "LLMLAB_PEAK_FLOPS" if training.get("peak_source") == "LLMLAB_PEAK_FLOPS" else "dense peak of the card"
    return f"{training['mfu']:.1%} of {peak / 1e12:,.0f} TFLOP/s ({source})"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a short markdown page (what ``doctor_report.md`` holds)."""
    f, tests, tr, goal = report["facts"], report["cuda_tests"], report["training"], report["goal"]
    rows = [
        ("card", f"{f['card']} (compute capability {f['capability']}, {f['memory_gib']} GiB); driver {f['driver']}"),
        ("torch / CUDA / Triton", f"{f['torch']} / {f['cuda']} / {f['triton'] or 'not installed'}"),
        ("chosen precision, compile", f"{f['dtype']}, torch.compile {'on' if f['compile'] else 'off'}"),
        ("CUDA tests (`pytest -m cuda`)", f"{tests['status']}: {tests.get('summary', '')}"),
    ]
    if "error" in tr:
        rows.append(("training", f"failed: {tr['error']}"))
    else:
        rows += [
            (
                "training",
                f"gpt2_124m ({tr['parameters'] / 1e6:.0f} M parameters), {tr['steps']} steps of "
                f"{tr['batch_size']} x {tr['tokens_per_step'] // max(tr['batch_size'], 1)} tokens, GPT-2 BPE, "
                f"{tr['dtype']}, compile {'on' if tr['compiled'] else 'off'}",
            ),
            ("tokens/s", f"{tr['tokens_per_sec']:,.0f} (median of the log windows after the first)"),
            ("MFU", _mfu_text(tr)),
            ("peak memory", _fmt(tr.get("peak_memory_gib"), ".1f", " GiB")),
            (
                "compile time (training step)",
                _fmt(tr.get("compile_seconds"), ".1f", " s", missing="eager (not compiled)")
                + f" (first step {tr['first_step_seconds']:.1f} s, then {tr['median_step_seconds'] * 1e3:.0f} ms/step)",
            ),
            (
                "loss",
                f"val {tr['val_loss_first']:.3f} -> {tr['val_loss_last']:.3f} "
                f"({'fell' if tr['loss_fell'] else 'did NOT fall'}); train {_fmt(tr.get('train_loss_first'), '.3f')}"
                f" -> {_fmt(tr.get('train_loss_last'), '.3f')}",
            ),
        ]
    if goal["met"] is None:
        met = "not measured (training failed)" if "error" in tr else "not measurable (unknown peak)"
    else:
        met = "met" if goal["met"] else "not met"
    rows.append(("goal", f">= {goal['mfu']:.0%} MFU ({goal['what']}): {met} on this card"))
    rows.append(("verdict", "OK" if report["ok"] else "PROBLEMS: " + "; ".join(report["problems"])))
    lines = ["# llmlab doctor report", "", f"{report['date']} · {f['platform']} · Python {f['python']}", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    if f.get("plan_note"):
        lines += ["", f.get("plan_note")]
    if tests.get("output_tail"):
        lines += ["", "CUDA test output (last lines):", "", "```", tests["output_tail"], "```"]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``OUT.md`` and ``OUT.json`` (``out`` may end in .md or .json; the other is written beside it)."""
    base = Path(out)
    if base.suffix in (".md", ".json"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    md, js = base.with_suffix(".md"), base.with_suffix(".json")
    md.write_text(render_markdown(report), encoding="utf-8")
    js.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return md, js


def run(out: str | os.PathLike = "doctor_report", steps: int = DEFAULT_STEPS, tests: bool = True) -> int:
    """The whole check; returns the exit status (0: no CUDA GPU, or everything passed; 1: a problem)."""
    line = no_cuda_line()
    if line is not None:
        print(line)
        return 0
    from llmlab import data

    device = torch.device("cuda")
    config = doctor_config(steps)
    facts = gpu_facts(device)
    print(f"llmlab doctor: {facts['card']} ({facts['dtype']}, compile {'on' if facts['compile'] else 'off'})")
    test_report = run_cuda_tests() if tests else {"status": "skipped", "summary": "--skip-tests"}
    print(f"CUDA tests: {test_report['status']} {test_report.get('summary', '')}")
    with tempfile.TemporaryDirectory(prefix="llmlab-doctor-") as tmp:
        try:
            data_dir = Path(tmp) / "shakespeare_gpt2"
            data.prepare(tokenizer="gpt2", out_dir=data_dir, progress=False)  # GPT-2 BPE, offline files
            print(f"training gpt2_124m for {steps} steps ...")
            training = measure_training(config, data_dir, Path(tmp) / "out")
        except Exception as error:  # noqa: BLE001 - the report says what failed
            training = {"error": f"{type(error).__name__}: {error}"}
    report = build_report(facts, test_report, training)
    md, js = write_report(report, out)
    print(render_markdown(report))
    print(f"report: {md} and {js}")
    return 0 if report["ok"] else 1
