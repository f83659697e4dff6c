"""Loop overhead: llmlab's Trainer against a plain training loop, in one process, same seed (a benchmark, not a test).

    python bench/loop_overhead.py [--preset cpu_small] [--steps 60] [--rounds 5] [--threads N]
                                  [--tokenizer char] [--data DIR] [--eval-iters N] [--auto-threads] [--bare]

Both sides train the same model (same initial weights), on the same batches (llmlab's sampler), with the
same fused AdamW, gradient clipping and learning-rate schedule (``lr_at``), for ``--steps`` steps per
round. Rounds alternate (plain first in even rounds, Trainer first in odd ones) after one warm-up
round each, so that load from other programs hits both alike; the medians of steps/s and their ratio
are printed. The thread count is fixed for both (``--threads``, default torch's); ``--auto-threads``
lets the Trainer tune it (``cpu_threads="auto"``) to measure the tuner's cost (read the total-time
ratio then: the median step hides the few probe steps).

What is timed: each step from its start to the next step's start (so the loop's own work between
steps counts: schedule, hooks, loss read, logging, sampler), steps 2..N on both sides (the first
step's one-time costs, optimizer state and allocator, are left out of both); per round, steps/s is
1 / the median step time, robust to a stray slow step from another program. For the Trainer the
marks come from ``on_step_start`` / ``on_step_timed``, with ``eval_interval`` beyond the round, so its
evaluations at step 0 and at the stop fall outside them (evaluation is work the plain loop does not
do; its share of a whole ``fit()`` is printed separately). By default the Trainer runs with what
``llmlab train`` adds (progress bar to a null file, metrics CSV); ``--bare`` leaves them out. A
same-losses check confirms that both sides computed the same thing.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from llmlab.callbacks import Callback, MetricsLogger, ProgressBar
from llmlab.config import Config, get_preset
from llmlab.data import TokenBatches, load_meta, prepare
from llmlab.model import GPT
from llmlab.schedule import lr_at
from llmlab.train import Trainer


def plain_loop(config: Config, data_dir: Path, steps: int) -> tuple[list[float], list[float]]:
    """The reference: ~20 lines of nanoGPT-style training. Returns (seconds of steps 2..N, losses at log steps)."""
    tc, mc = config.train, config.model
    torch.manual_seed(tc.seed)
    model = GPT(mc)
    optimizer = model.optimizer_for(tc, "cpu")  # what the Trainer builds
    batches = TokenBatches(data_dir, "train", mc.block_size, tc.batch_size, seed=tc.seed)
    model.train()
    losses: list[float] = []
    starts: list[float] = []
    for step in range(steps):
        starts.append(time.perf_counter())
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, tc)
        total = 0.0
        for _ in range(tc.grad_accum_steps):
            x, y = batches.next()  # (B, T), (B, T)
            _, loss = model(x, y)
            (loss / tc.grad_accum_steps).backward()
            total = loss.detach() + total
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % tc.log_interval == 0:
            losses.append(float(total / tc.grad_accum_steps))
    starts.append(time.perf_counter())
    return step_seconds(starts), losses


def step_seconds(marks: list[float]) -> list[float]:
    """Seconds per step from the times each step started (and the last one ended); the first step is dropped:
    its one-time costs (optimizer state, allocator) would land on one side only."""
    return [b - a for a, b in zip(marks[1:], marks[2:])]


class StepClock(Callback):
    """When each step starts (so a step's time includes the loop's own work around it) and the last one ends."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.end = 0.0

    def on_step_start(self, trainer: Trainer, step: int) -> None:
        self.marks.append(time.perf_counter())

    def on_step_timed(self, trainer: Trainer, step: int, seconds: float) -> None:
        self.end = time.perf_counter()


def trainer_run(
    config: Config, data_dir: Path, steps: int, threads: int | str, bare: bool, scratch: Path
) -> tuple[list[float], float, list[float]]:
    """Trainer.fit for ``steps`` steps. Returns (seconds of steps 2..N, share of fit() outside the steps, losses)."""
    clock = StepClock()
    callbacks: list[Callback] = [clock]
    out = Path(tempfile.mkdtemp(dir=scratch))
    if not bare:  # what `llmlab train` adds
        callbacks += [ProgressBar(file=io.StringIO()), MetricsLogger(out / "metrics.csv")]
    trainer = Trainer(config, data_dir, out, callbacks=callbacks, cpu_threads=threads)
    t0 = time.perf_counter()
    result = trainer.fit()
    whole = time.perf_counter() - t0
    inside = clock.end - clock.marks[0]
    return step_seconds([*clock.marks, clock.end]), 1 - inside / whole, [s.loss for s in result.steps]


def data_for(tokenizer: str) -> Path:
    """The embedded corpus prepared with ``tokenizer`` (cached in the temp folder between runs)."""
    out = Path(tempfile.gettempdir()) / f"llmlab_bench_{tokenizer}_tail"
    prepare(tokenizer=tokenizer, out_dir=out, split="tail", val_fraction=0.1, progress=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu_small")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per round (default 60)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side, after one warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--tokenizer", default=None, help="default: the preset's")
    parser.add_argument("--data", default=None, help="a prepared data directory (default: the embedded corpus)")
    parser.add_argument(
        "--eval-iters",
        type=int,
        default=None,
        help="batches per evaluation (outside the timed window; default: the preset's)",
    )
    parser.add_argument("--auto-threads", action="store_true", help="the Trainer tunes its threads (cpu_threads=auto)")
    parser.add_argument("--bare", action="store_true", help="the Trainer without progress bar and metrics file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    tokenizer = args.tokenizer or preset.train.tokenizer
    data_dir = Path(args.data) if args.data else data_for(tokenizer)
    # The data decides vocab_size and the tokenizer; a round is max_iters (the schedule spans it), and
    # evaluations only at step 0 and at the stop.
    config = preset.override(
        vocab_size=int(load_meta(data_dir)["vocab_size"]),
        tokenizer=tokenizer,
        max_iters=args.steps,
        warmup_iters=min(preset.train.warmup_iters, args.steps),
        eval_interval=args.steps + 1,
        device="cpu",
        compile="false",
        eval_iters=args.eval_iters or preset.train.eval_iters,
    )
    threads: int | str = "auto" if args.auto_threads else args.threads
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {args.threads} threads, load {load:.1f} on {os.cpu_count()} CPUs; "
        f"{args.preset} on {data_dir.name}: batch {config.train.batch_size}x{config.model.block_size}, "
        f"{args.steps} steps x {args.rounds} rounds (+1 warm-up); Trainer cpu_threads={threads!r}"
        f"{', bare' if args.bare else ', with progress bar + metrics file'}"
    )

    rates: dict[str, list[float]] = {"plain": [], "trainer": []}  # per round: 1 / median step time
    totals: dict[str, list[float]] = {"plain": [], "trainer": []}  # per round: steps / total time of steps 2..N
    outside: list[float] = []
    with tempfile.TemporaryDirectory(prefix="llmlab_loop_overhead_") as scratch:
        for r in range(args.rounds + 1):
            order = ("plain", "trainer") if r % 2 == 0 else ("trainer", "plain")
            for side in order:
                torch.set_num_threads(args.threads)
                if side == "plain":
                    seconds, plain_losses = plain_loop(config, data_dir, args.steps)
                else:
                    seconds, share, trainer_losses = trainer_run(
                        config, data_dir, args.steps, threads, args.bare, Path(scratch)
                    )
                    outside.append(share)
                if r > 0:  # round 0 warms up: allocator, page cache, first-call costs
                    rates[side].append(1 / statistics.median(seconds))
                    totals[side].append(len(seconds) / sum(seconds))
            if r > 0:
                p, t = rates["plain"][-1], rates["trainer"][-1]
                print(f"  round {r}: plain {p:6.2f} steps/s, Trainer {t:6.2f} steps/s ({t / p:.3f}x)")
    same = plain_losses == trainer_losses
    print(
        f"same losses on both sides: {same}"
        + ("" if same or threads == "auto" else " (they should be: same seed, batches and threads)")
    )
    p, t = statistics.median(rates["plain"]), statistics.median(rates["trainer"])
    pt, tt = statistics.median(totals["plain"]), statistics.median(totals["trainer"])
    print(
        f"median: plain loop {p:.2f} steps/s, Trainer {t:.2f} steps/s, ratio {t / p:.3f}x (goal >= 0.97x); "
        f"from total time instead of the median step: {tt / pt:.3f}x"
    )
    print(
        f"Trainer fit() spent {100 * statistics.median(outside):.0f}% of its time outside the steps (setup, "
        f"evaluation at step 0 and at the stop, checkpoint)"
    )


if __name__ == "__main__":
    main()
