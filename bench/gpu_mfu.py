"""GPT-2 124M on one CUDA GPU: tokens/s and MFU of each setting, all measured in one process, one after another.

    python bench/gpu_mfu.py [--steps 30] [--variants base,pad64,...] [--profile pad64_b48] [--json PATH]

Each variant trains ``gpt2_124m`` (bf16 autocast + torch.compile, as ``llmlab train`` on a GPU) for ``--steps``
optimizer steps through :func:`llmlab.doctor.measure_training` (the doctor's own measurement: median tokens/s of
the log windows after the first) on the embedded Shakespeare with GPT-2's BPE. The first variant is the baseline
and runs again at the end, so the drift of the card over the run is printed beside the ratios. ``--profile NAME``
also prints the top CUDA kernels of three compiled steps of that variant (torch.profiler).

Variants (name: what changes from ``base``, the doctor's setting before the padded vocabulary):
    base        vocabulary 50,257 rows, batch 12, no accumulation
    pad64       the vocabulary padded to 50,304 rows (``vocab_multiple=64``, the preset's setting now)
    pad64_b24   ... and batch 24
    pad64_b48   ... and batch 48
    base_b48    batch 48 without the padding
    pad64_acc4  batch 12 with 4 micro-batches per optimizer step (the update's cost shared by 4)
    pad64_b48_at  batch 48 with ``torch.compile(mode="max-autotune-no-cudagraphs")`` (minutes of compile)

Without CUDA it says so and exits 0. Not a test: a measurement (README / docs record what it printed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {"vocab_multiple": 1, "batch_size": 12},
    "pad64": {"vocab_multiple": 64, "batch_size": 12},
    "pad64_b24": {"vocab_multiple": 64, "batch_size": 24},
    "pad64_b48": {"vocab_multiple": 64, "batch_size": 48},
    "base_b48": {"vocab_multiple": 1, "batch_size": 48},
    "pad64_acc4": {"vocab_multiple": 64, "batch_size": 12, "grad_accum_steps": 4},
    "pad64_b48_at": {"vocab_multiple": 64, "batch_size": 48, "_mode": "max-autotune-no-cudagraphs"},
}


def run_variant(name: str, steps: int, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    from llmlab import runtime
    from llmlab.doctor import doctor_config, measure_training

    settings = dict(VARIANTS[name])
    mode = settings.pop("_mode", None)
    config = doctor_config(steps).override(**settings)
    original = runtime.compile_model
    if mode:  # the Trainer compiles through runtime.compile_model: this run asks torch.compile for another mode
        runtime.compile_model = lambda model, device: torch.compile(model, mode=mode)
    torch._dynamo.reset()
    try:
        result = measure_training(config, data_dir, out_dir)
    finally:
        runtime.compile_model = original
    result["variant"] = name
    result["mode"] = mode or "default"
    return result


def profile_variant(name: str, data_dir: Path, out_root: Path) -> str:
    """The top CUDA kernels of three compiled steps (after two warm-up steps) of ``name``."""
    from torch.profiler import ProfilerActivity, profile

    from llmlab.doctor import doctor_config
    from llmlab.train import Trainer

    settings = {k: v for k, v in VARIANTS[name].items() if not k.startswith("_")}
    torch._dynamo.reset()
    trainer = Trainer(doctor_config(20).override(**settings), data_dir, out_root / f"profile_{name}")
    for _ in range(2):
        trainer.train_step(1e-4)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        for _ in range(3):
            trainer.train_step(1e-4)
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    table = prof.key_averages().table(sort_by="device_time_total", row_limit=18, max_name_column_width=70)
    kernels = sum(e.self_device_time_total for e in prof.key_averages() if e.device_type.name == "CUDA") / 1e3
    return f"profile of {name}: 3 steps in {wall * 1e3:.0f} ms of wall time, {kernels:.0f} ms of CUDA kernels\n{table}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--variants", default="base,pad64,pad64_b24,pad64_b48,pad64_acc4")
    parser.add_argument("--profile", default="", help="a variant whose kernels to profile (empty: none)")
    parser.add_argument("--json", default="", help="also write every result to this JSON file")
    parser.add_argument("--no-repeat", action="store_true", help="do not run the first variant again at the end")
    args = parser.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if not torch.cuda.is_available():
        print("bench/gpu_mfu.py: no CUDA GPU here; nothing to measure (run it on a machine with an NVIDIA GPU).")
        return 0
    from llmlab import data

    print(f"{torch.cuda.get_device_name()} · torch {torch.__version__} · CUDA {torch.version.cuda}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="llmlab-gpu-mfu-") as tmp:
        data_dir = Path(tmp) / "shakespeare_gpt2"
        data.prepare(tokenizer="gpt2", out_dir=data_dir, progress=False)
        order = names if args.no_repeat else [*names, names[0]]  # the baseline again at the end: the card's drift
        for i, name in enumerate(order):
            started = time.perf_counter()
            r = run_variant(name, args.steps, data_dir, Path(tmp) / f"run{i}_{name}")
            results.append(r)
            print(
                f"{name:14s} batch {r['batch_size']:>2} x accum {r['grad_accum_steps']}  "
                f"{r['tokens_per_sec']:>10,.0f} tok/s  MFU {r['mfu']:.1%}  "
                f"{r['median_step_seconds'] * 1e3:6.1f} ms/step  "
                f"{r['peak_memory_gib']:5.1f} GiB  compile {r['compile_seconds'] or 0:5.1f} s  "
                f"val {r['val_loss_first']:.3f}->{r['val_loss_last']:.3f}  ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        if args.profile:
            print(profile_variant(args.profile, data_dir, Path(tmp)), flush=True)
    first = results[0]["tokens_per_sec"]
    last = first if args.no_repeat else results[-1]["tokens_per_sec"]
    reference = statistics.mean([first, last])
    drift = "not repeated" if args.no_repeat else f"then {last:,.0f} tok/s, drift {last / first - 1:+.1%}"
    print(f"baseline {names[0]}: {first:,.0f} tok/s ({drift}); ratios to the baseline:")
    for r in results[1 : len(names)]:
        print(f"  {r['variant']:14s} {r['tokens_per_sec'] / reference:.3f}x  (MFU {r['mfu']:.1%})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
