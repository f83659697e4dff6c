"""Resume after a hard kill: SIGKILL a training process mid-run, `llmlab train --resume`, and the loss curve
equals an uninterrupted run with the same seed, exactly (same thread count, deterministic CPU kernels,
restored model/optimizer/RNG/sampler state, and a learning rate that is a function of the step only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmlab.callbacks import MetricsLogger
from llmlab.config import Config

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from llmlab.config import Config
    from llmlab.callbacks import Callback, MetricsLogger
    from llmlab.train import Trainer

    config, data_dir, out_dir, metrics, delay = json.loads(sys.argv[1]), *sys.argv[2:5], float(sys.argv[5])

    class Slow(Callback):  # gives the test a window to kill the process between steps
        def on_step_end(self, trainer, info):
            time.sleep(delay)

    Trainer(Config.from_dict(config), data_dir, out_dir, callbacks=[MetricsLogger(metrics), Slow()]).fit()
    """
)


def _env() -> dict[str, str]:
    # One thread everywhere: matmul reductions then run in the same order in every process.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _curve(path: Path) -> list[tuple]:
    rows = MetricsLogger.read(path)
    return [(r["kind"], r["step"], r["loss"], r["lr"], r["train_loss"], r["val_loss"], r["val_bpb"]) for r in rows]


@pytest.mark.slow  # subprocesses, SIGKILL, ~20 s
def test_sigkill_then_resume_reproduces_the_uninterrupted_curve(
    char_data: Path, tiny_config: Callable[..., Config], tmp_path: Path
) -> None:
    data_dir = char_data  # read only: every run writes under tmp_path
    config = json.dumps(tiny_config(max_iters=30, eval_interval=10).to_dict())
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)

    # The reference: one uninterrupted run.
    full = tmp_path / "full.jsonl"
    subprocess.run(
        [sys.executable, str(script), config, str(data_dir), str(tmp_path / "full"), str(full), "0"],
        check=True,
        env=_env(),
        timeout=120,
    )

    # The same run, killed with SIGKILL once step 14 is logged (checkpoint at step 10 is on disk by then).
    out, metrics = tmp_path / "killed", tmp_path / "killed.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(script), config, str(data_dir), str(out), str(metrics), "0.05"], env=_env()
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if metrics.exists() and any(r["kind"] == "step" and r["step"] >= 14 for r in _safe_rows(metrics)):
                break
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(r["step"] for r in _safe_rows(metrics) if r["kind"] == "step")
    assert 14 <= killed_at < 30

    # Resume through the command line, as a learner would.
    cmd = [
        sys.executable,
        "-m",
        "llmlab",
        "train",
        "--resume",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--metrics",
        str(metrics),
        "--quiet",
    ]
    done = subprocess.run(cmd, env=_env(), timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    assert _curve(metrics) == _curve(full)  # every step's loss and lr, every evaluation: bit for bit
    assert [r["step"] for r in MetricsLogger.read(metrics) if r["kind"] == "step"] == list(range(1, 31))


def _safe_rows(path: Path) -> list[dict]:
    # The writer may be mid-line: ignore a partial last line.
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows
