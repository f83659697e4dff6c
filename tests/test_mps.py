"""Apple MPS: the same tiny run on MPS and on the CPU gives the same losses (within float32 reordering noise).

Skipped where there is no MPS (Linux, Windows, CI). The choice of dtype and compile for MPS itself (float32
and eager by default; bfloat16 only when asked and where it runs) is tested without a Mac in
test_runtime_selection.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmlab import runtime
from llmlab.train import Trainer

needs_mps = pytest.mark.skipif(not runtime._mps_available(), reason="needs Apple MPS (a Mac with Apple silicon)")
STEPS = 30
# Same weights, same batches, float32 on both sides: only the order of floating-point sums differs, which
# moves a loss of ~4 by far less than this after 30 AdamW steps.
TOLERANCE = 2e-2


def _losses(device: str, data: Path, out: Path, tiny_config, **overrides: object) -> list[float]:
    cfg = tiny_config(device=device, max_iters=STEPS, log_interval=1, eval_interval=STEPS, **overrides)
    result = Trainer(cfg, data, out, cpu_threads=1 if device == "cpu" else "auto").fit()
    return [s.loss for s in result.steps]


@needs_mps
def test_mps_defaults_are_float32_and_eager() -> None:
    plan = runtime.runtime_plan("auto", "auto", torch.device("mps"))
    assert plan.dtype == torch.float32 and plan.compile is False


@needs_mps
def test_mps_matches_the_cpu(char_data: Path, tiny_config, tmp_path: Path) -> None:
    cpu = _losses("cpu", char_data, tmp_path / "cpu", tiny_config)
    mps = _losses("mps", char_data, tmp_path / "mps", tiny_config)
    assert len(cpu) == len(mps) == STEPS
    assert max(abs(a - b) for a, b in zip(cpu, mps)) < TOLERANCE, list(zip(cpu, mps))
    assert mps[-1] < mps[0] - 0.5  # and it learns


@needs_mps
def test_mps_bfloat16_where_it_runs(char_data: Path, tiny_config, tmp_path: Path) -> None:
    if not runtime.probe_device(torch.device("mps")).mps_bf16:
        with pytest.raises(ValueError, match="macOS 14"):
            Trainer(tiny_config(device="mps", dtype="bfloat16"), char_data, tmp_path / "bf16")
        return
    losses = _losses("mps", char_data, tmp_path / "bf16", tiny_config, dtype="bfloat16")
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] - 0.5
