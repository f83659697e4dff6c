"""Training benchmarks: (a) step throughput at nanoGPT's CPU configuration, (b) quality per wall-clock of
the cpu_small preset, (c) peak memory.

    python bench/train.py throughput [--steps 30 --repeats 5]
    python bench/train.py quality [--seconds 137]
    python bench/train.py memory [--preset seed_manual --steps 3]

(a) compares llmlab's training step (Trainer._train_step: the code path `llmlab train` runs) with a plain
eager step of the same model written here (forward, backward, clip, AdamW with torch's CPU default, loss
read every step) in the same process, alternating, median of several repeats. nanoGPT's figure for this
configuration on the reference machine: 12.1 k tokens/s (see ../shared/reference.md).
(b) trains cpu_small for a fixed wall-clock budget on the embedded corpus prepared with split="tail" (the
last 10% of the joined text held out, as the nanoGPT reference) and reports val bits per byte.
(c) peak RSS of a few training steps (resource.getrusage, so run each preset in its own process).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmlab.config import Config, get_preset
from llmlab.model import GPT

NANOGPT_TOKENS_PER_SEC = 12_100  # reference.md: nanoGPT, same configuration, this machine
NANOGPT_BPB_137S = 2.731  # reference.md: nanoGPT val bits/byte after 137 s
PEAK_FLOPS = 135e9  # reference.md: practical fp32 matmul peak of the 2-core reference machine


def nanogpt_cpu_config() -> Config:
    """nanoGPT's README CPU run: char level, depth 4, 4 heads, 128 wide, block 64, batch 12, dropout 0."""
    return get_preset("cpu_small").override(
        depth=4, num_heads=4, embedding_size=128, block_size=64, dropout=0.0, batch_size=12,
        grad_accum_steps=1, max_lr=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=2000, beta2=0.99,
        weight_decay=0.1, grad_clip=1.0, device="cpu", compile="false", tokenizer="char", log_interval=1,
    )


_SCRATCH = tempfile.TemporaryDirectory(prefix="llmlab_bench_run_")  # checkpoints of bench runs; removed at exit


def scratch_dir() -> Path:
    """A fresh output directory under the run's temporary folder."""
    return Path(tempfile.mkdtemp(dir=_SCRATCH.name))


def prepared(tokenizer: str, split: str = "tail") -> Path:
    from llmlab import data

    out = Path(tempfile.gettempdir()) / f"llmlab_bench_{tokenizer}_{split}"
    data.prepare(tokenizer=tokenizer, out_dir=out, split=split, val_fraction=0.1, progress=False)
    return out


def bench_throughput(steps: int, repeats: int) -> None:
    from llmlab.train import Trainer

    data_dir = prepared("char")
    config = nanogpt_cpu_config()
    trainer = Trainer(config, data_dir, scratch_dir(), callbacks=())
    print(f"model: {trainer.raw_model.num_parameters() / 1e6:.2f} M parameters, "
          f"vocab {trainer.config.model.vocab_size}, {torch.get_num_threads()} threads, "
          f"{config.train.batch_size * config.model.block_size} tokens/step")

    # The baseline: the same architecture and initial weights, stepped the plain way.
    plain = GPT(trainer.config.model)
    plain.load_state_dict(trainer.raw_model.state_dict())
    params = list(plain.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))  # torch's CPU default implementation, as nanoGPT on CPU
    batches = trainer._batches("train", config.train.batch_size, 0)

    def plain_step() -> float:
        x, y = batches.next()
        _, loss = plain(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    def llmlab_step() -> float:
        return float(trainer._train_step(1e-3))

    tokens = config.train.batch_size * config.model.block_size
    steps_fns = (("plain eager", plain_step), ("llmlab", llmlab_step))
    for _, fn in steps_fns:  # warm-up (allocator, first-call overheads)
        for _ in range(5):
            fn()
    # Alternate single steps so that load from other processes hits both sides alike.
    times: dict[str, list[float]] = {name: [] for name, _ in steps_fns}
    for _ in range(steps * repeats):
        for name, fn in steps_fns:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    flops_per_token = trainer.raw_model.estimate_flops_per_token()
    med = {k: tokens / statistics.median(v) for k, v in times.items()}
    best = {k: tokens / statistics.quantiles(v, n=10)[0] for k, v in times.items()}
    for name in times:
        print(f"{name:12s} median {med[name]:8,.0f} tokens/s ({tokens / med[name] * 1e3:5.1f} ms/step, "
              f"{100 * med[name] * flops_per_token / PEAK_FLOPS:4.1f}% of {PEAK_FLOPS / 1e9:.0f} GFLOP/s); "
              f"fastest 10%: {best[name]:8,.0f} tokens/s ({100 * best[name] * flops_per_token / PEAK_FLOPS:4.1f}%)")
    print(f"llmlab / plain eager (same run, {len(times['llmlab'])} alternating steps each): median "
          f"{med['llmlab'] / med['plain eager']:.2f}x, fastest 10% {best['llmlab'] / best['plain eager']:.2f}x;  "
          f"llmlab / nanoGPT's 12.1 k tokens/s: {med['llmlab'] / NANOGPT_TOKENS_PER_SEC:.2f}x (median), "
          f"{best['llmlab'] / NANOGPT_TOKENS_PER_SEC:.2f}x (fastest 10%)")


def bench_quality(seconds: float, tokenizer: str | None, overrides: list[str]) -> None:
    from llmlab.cli import parse_overrides
    from llmlab.train import Trainer

    config = get_preset("cpu_small").override(max_seconds=seconds).override(parse_overrides(overrides))
    tok = tokenizer or config.train.tokenizer
    config = config.override(tokenizer=tok)
    data_dir = prepared(tok)
    t0 = time.perf_counter()
    trainer = Trainer(config, data_dir, scratch_dir(), callbacks=())
    result = trainer.fit()
    wall = time.perf_counter() - t0
    print(f"cpu_small ({tok}, {trainer.raw_model.num_parameters() / 1e6:.2f} M params, batch "
          f"{config.train.batch_size}x{config.model.block_size}): {result.final_step} steps, stopped at "
          f"{result.evals[-1].elapsed:.1f} s ({result.stop_reason}); final evaluation done at {result.seconds:.1f} s, "
          f"{wall:.1f} s wall with setup")
    for e in result.evals:
        print(f"  step {e.step:5d}  t={e.elapsed:6.1f}s  val {e.val_loss:.4f} nats/token  {e.val_bpb:.3f} bits/byte")
    exact = full_split_bpb(trainer, "val")
    print(f"final model on the whole val split (every token once, {trainer.meta['val_tokens']:,} tokens): "
          f"{exact:.3f} bits/byte")
    budget = "" if seconds == 137 else f" (this run: {seconds:g} s, not comparable)"
    print(f"best val {result.best_val_bpb:.3f} bits/byte vs nanoGPT {NANOGPT_BPB_137S} in 137 s{budget} "
          f"({result.best_val_bpb / NANOGPT_BPB_137S:.3f}x); median {result.tokens_per_sec:,.0f} tokens/s; "
          f"peak RSS {peak_rss_mb():,.0f} MB")


@torch.no_grad()
def full_split_bpb(trainer, split: str) -> float:  # type: ignore[no-untyped-def]
    """Exact bits per byte of the trained model over a whole split (the trainer's figure samples windows)."""
    import torch.nn.functional as F

    model = trainer.raw_model.eval()
    total, count = 0.0, 0
    for x, y in trainer._batches(split, 64, 0).sequential_batches():  # (B, T) each; padding targets are -1
        logits, _ = model(x)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum").item()
        count += int((y != -1).sum())
    from llmlab.train import bits_per_byte

    meta = trainer.meta
    return bits_per_byte(total / count, meta[f"{split}_tokens"], meta[f"{split}_bytes"])


def bench_memory(preset: str, steps: int, batch_size: int | None) -> None:
    from llmlab.train import Trainer

    config = get_preset(preset).override(device="cpu", compile="false", max_iters=steps, eval_interval=10**6,
                                         eval_iters=1, warmup_iters=0, log_interval=1)
    if batch_size:
        config = config.override(batch_size=batch_size)
    data_dir = prepared(config.train.tokenizer)
    trainer = Trainer(config, data_dir, scratch_dir(), callbacks=())
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer._train_step(config.train.max_lr)
    print(f"{preset}: {trainer.raw_model.num_parameters() / 1e6:.1f} M params, batch {config.train.batch_size}x"
          f"{config.model.block_size}: {steps} steps in {time.perf_counter() - t0:.1f} s, "
          f"peak RSS {peak_rss_mb():,.0f} MB")


def load_note() -> str:
    """The machine's load average: these figures are only comparable on a quiet machine."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return ""
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what")
    t = sub.add_parser("throughput")
    t.add_argument("--steps", type=int, default=30)
    t.add_argument("--repeats", type=int, default=5)
    q = sub.add_parser("quality")
    q.add_argument("--seconds", type=float, default=137.0)
    q.add_argument("--tokenizer", default=None)
    q.add_argument("--set", dest="overrides", action="append", default=[])
    m = sub.add_parser("memory")
    m.add_argument("--preset", default="cpu_small")
    m.add_argument("--steps", type=int, default=3)
    m.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {load_note()} at start")
    if args.what == "quality":
        bench_quality(args.seconds, args.tokenizer, args.overrides)
    elif args.what == "memory":
        bench_memory(args.preset, args.steps, args.batch_size)
    else:  # default (make bench): the throughput comparison, short
        bench_throughput(getattr(args, "steps", 30), getattr(args, "repeats", 5))
    print(f"{load_note()} at the end")


if __name__ == "__main__":
    main()
