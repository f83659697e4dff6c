"""Ctrl-C and SIGTERM on a real `llmlab train` process: it stops between two steps, saves that exact state,
prints the command that continues it, and that command reproduces the uninterrupted run bit for bit.

(In-process versions with real signals are in test_train_robustness.py and test_cli.py.)"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llmlab.callbacks import MetricsLogger

MAX_ITERS = 400
ARGS = [
    *("--set", "block_size=16", "--set", "embedding_size=32", "--set", "num_heads=2", "--set", "depth=2"),
    *("--set", "batch_size=4", "--set", f"max_iters={MAX_ITERS}", "--set", "warmup_iters=10"),
    *("--set", "eval_interval=50", "--set", "eval_iters=2", "--set", "log_interval=1", "--set", "device=cpu"),
    "--quiet",
]


def _env() -> dict[str, str]:
    # One thread everywhere: matmul reductions then run in the same order in every process.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _llmlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmlab", *args]


def _curve(path: Path) -> list[tuple]:
    rows = MetricsLogger.read(path)
    return [(r["kind"], r["step"], r["loss"], r["lr"], r["train_loss"], r["val_loss"], r["val_bpb"]) for r in rows]


def _steps_logged(path: Path) -> int:
    if not path.exists():
        return 0
    steps = [0]
    for line in path.read_text().splitlines():  # the writer may be mid-line: skip a partial last line
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["kind"] == "step":
            steps.append(row["step"])
    return max(steps)


@pytest.fixture(scope="module")
def uninterrupted(char_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("full")
    metrics = root / "full.jsonl"
    cmd = _llmlab("train", "--data", str(char_data), "--out", str(root / "out"), "--metrics", str(metrics), *ARGS)
    subprocess.run(cmd, check=True, env=_env(), timeout=300, capture_output=True)
    return metrics, root / "out" / "last_checkpoint.bin"


@pytest.mark.slow  # three llmlab processes per signal, ~30 s
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_step_and_the_printed_command_continues_it_exactly(
    char_data: Path, tmp_path: Path, uninterrupted: tuple[Path, Path], signum: int, status: int
) -> None:
    out, metrics = tmp_path / "out", tmp_path / "run.jsonl"
    cmd = _llmlab("train", "--data", str(char_data), "--out", str(out), "--metrics", str(metrics), *ARGS)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _steps_logged(metrics) < 30:  # training is under way (the handler is installed by then)
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    name = signal.Signals(signum).name
    assert proc.returncode == status, err
    assert "Traceback" not in err and err.count("interrupted") == 1, err  # said once, by the command
    line = err.strip().splitlines()[-1]
    prefix = f"interrupted ({name}) at step "
    assert line.startswith(prefix), err
    step = int(line[len(prefix) :].split(":")[0])
    assert 30 <= step < MAX_ITERS
    assert f"this run's state is saved in {out / 'last_checkpoint.bin'}" in line
    assert torch.load(out / "last_checkpoint.bin")["iter"] == step  # the steps since the last evaluation are kept
    # The exact command it printed: the same arguments, with --resume.
    command = shlex.split(line.split("Continue with: ")[1])
    assert command[:2] == ["llmlab", "train"] and command[-1] == "--resume"
    assert command[2:-1] == [
        "--data",
        str(char_data),
        "--out",
        str(out),
        *ARGS[:-1],
        "--metrics",
        str(metrics),
        "--quiet",
    ]
    done = subprocess.run(_llmlab(*command[1:]), env=_env(), timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"continuing from step {step} of {MAX_ITERS}" in done.stderr
    # Bit for bit the uninterrupted run: every logged loss and lr, every evaluation, the final weights.
    full_metrics, full_last = uninterrupted
    assert _curve(metrics) == _curve(full_metrics)
    final, reference = torch.load(out / "last_checkpoint.bin"), torch.load(full_last)
    for name_, tensor in reference["model"].items():
        assert torch.equal(final["model"][name_], tensor), name_
