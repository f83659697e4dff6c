"""The chunked output-layer loss (llmlab.head_loss) against the plain form, on this CPU. Not a test.

    python bench/head_loss.py [--repeats 30] [--steps 40] [--presets cpu_modern cpu_small]

(a) forward + backward of head matmul, soft-cap and cross-entropy alone, at the presets' shapes, plain and
chunked alternating, medians and the plain / chunked ratio; (b) whole training steps (``Trainer.train_step``)
of each preset with the chunked loss on and off in alternate steps of one trainer, so load from other
processes hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

import llmlab.model as model_module
from llmlab.config import get_preset
from llmlab.head_loss import linear_cross_entropy, reference_linear_cross_entropy
from llmlab.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import prepared_for, scratch_dir  # noqa: E402  (bench/common.py)


def alternate(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each side, run in alternation after a warm-up."""
    for fn in sides.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def loss_step(fn: Callable[..., torch.Tensor], *args: object) -> None:
    fn(*args).backward()


def train_step(trainer: Trainer, lr: float, chunked: bool) -> None:
    model_module.CHUNKED_LOSS = chunked  # read at each forward: the same trainer steps both ways
    trainer.train_step(lr)


def bench_loss(repeats: int) -> None:
    # (rows, channels, vocab, soft-cap): cpu_modern and cpu_small (16 x 128 tokens, BPE 1,024), and GPT-2's
    # vocabulary at a short batch.
    for n, c, v, cap in [(2048, 128, 1024, 15.0), (2048, 128, 1024, 0.0), (512, 128, 50257, 0.0)]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, generator=g, requires_grad=True)
        w = (0.1 * torch.randn(v, c, generator=g)).requires_grad_()
        t = torch.randint(0, v, (n,), generator=g)
        med = alternate(
            {
                "plain": partial(loss_step, reference_linear_cross_entropy, x, w, t, cap),
                "chunked": partial(loss_step, linear_cross_entropy, x, w, t, cap),
            },
            repeats,
        )
        print(
            f"loss alone, N={n} C={c} V={v} softcap={cap:g}: plain {med['plain'] * 1e3:6.1f} ms, chunked "
            f"{med['chunked'] * 1e3:6.1f} ms -> {med['plain'] / med['chunked']:.2f}x"
        )


def bench_steps(presets: list[str], steps: int) -> None:
    for preset in presets:
        config = get_preset(preset).override(compile="false", tokenizer="bpe")
        trainer = Trainer(config, prepared_for(config), scratch_dir(), callbacks=())
        lr = config.train.max_lr

        med = alternate(
            {"plain": partial(train_step, trainer, lr, False), "chunked": partial(train_step, trainer, lr, True)}, steps
        )
        model_module.CHUNKED_LOSS = True
        print(
            f"{preset} training step ({torch.get_num_threads()} threads, {steps} alternating steps each): plain "
            f"{med['plain'] * 1e3:.0f} ms, chunked {med['chunked'] * 1e3:.0f} ms -> "
            f"{med['plain'] / med['chunked']:.3f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--presets", nargs="*", default=["cpu_modern", "cpu_small"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_loss(args.repeats)
    bench_steps(args.presets, args.steps)


if __name__ == "__main__":
    main()
