"""Training benchmarks: (a) step throughput at nanoGPT's CPU configuration, (b) quality per wall-clock of
the cpu_small preset, (c) peak memory. They print figures and same-run ratios; they are not tests.

    python bench/train.py throughput [--steps 30 --repeats 5] [--nanogpt PATH] [--compile [--compile-mode M]]
    python bench/train.py quality [--preset cpu_small] [--seconds 137 | --steps N] [--set KEY=VALUE ...]
                                  [--nanogpt PATH]
    python bench/train.py memory [--preset seed_manual --steps 3]

(a) compares llmlab's training step (``Trainer.train_step``: the code path `llmlab train` runs) with a
plain eager step of the same model written here (forward, backward, clip, AdamW with torch's CPU
default, loss read every step), in the same process, alternating single steps, median of several
repeats. With ``--nanogpt PATH`` (a nanoGPT checkout, or its model.py) nanoGPT's own model and
optimizer join the alternation, on the same batches. MFU is printed when ``LLMLAB_PEAK_FLOPS`` gives
the machine's peak FLOP/s (e.g. ``LLMLAB_PEAK_FLOPS=135e9``).
(b) trains cpu_small for a fixed wall-clock budget on the embedded corpus prepared with split="tail" (the
last 10% of the joined text held out, as nanoGPT's Shakespeare set) and reports val bits per byte, also
exactly over every val token. With ``--nanogpt PATH`` nanoGPT's model is then trained for the same
seconds on the same batches with the same schedule, and scored the same way. ``--steps N`` trains a fixed
number of steps instead (the schedule over steps): for settings that do not change a step's cost, such as a
learning rate, it compares them without the machine's speed of the moment in the way.
(c) peak RSS of a few training steps (resource.getrusage, so run each preset in its own process).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import full_split_bpb, load_note, peak_rss_mb, prepared, prepared_for, scratch_dir  # noqa: E402  (bench/common.py)

from llmlab.config import Config, get_preset
from llmlab.data import TokenBatches
from llmlab.model import GPT
from llmlab.runtime import peak_flops_for
from llmlab.schedule import lr_at
from llmlab.train import Trainer


def nanogpt_cpu_config() -> Config:
    """nanoGPT's README CPU run: char level, depth 4, 4 heads, 128 wide, block 64, batch 12, dropout 0, no
    biases (``bias = False``, the default of nanoGPT's train.py, which that run keeps), and nanoGPT's exact (erf)
    GELU, so that both sides compute the same function."""
    return get_preset("cpu_small").override(
        activation="gelu_exact",
        bias=False,
        depth=4,
        num_heads=4,
        embedding_size=128,
        block_size=64,
        dropout=0.0,
        batch_size=12,
        grad_accum_steps=1,
        max_lr=1e-3,
        min_lr=1e-4,
        warmup_iters=100,
        max_iters=2000,
        beta2=0.99,
        weight_decay=0.1,
        grad_clip=1.0,
        device="cpu",
        compile="false",
        tokenizer="char",
        log_interval=1,
    )


def nanogpt_model(path: str, config: Config) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """nanoGPT's GPT (from a checkout folder or its model.py) with llmlab's settings, and its own optimizer."""
    file = Path(path) / "model.py" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise SystemExit(f"--nanogpt {path}: no model.py there; pass a nanoGPT checkout or its model.py.")
    spec = importlib.util.spec_from_file_location("nanogpt_model", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mc, tc = config.model, config.train
    model = module.GPT(
        module.GPTConfig(
            block_size=mc.block_size,
            vocab_size=mc.vocab_size,
            n_layer=mc.depth,
            n_head=mc.num_heads,
            n_embd=mc.embedding_size,
            dropout=mc.dropout,
            bias=mc.bias,
        )
    )
    optimizer = model.configure_optimizers(tc.weight_decay, tc.max_lr, (tc.beta1, tc.beta2), "cpu")
    return model, optimizer


def eager_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: TokenBatches, lr: float, clip: float
) -> float:
    """One plain training step, nanoGPT style; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    x, y = batches.next()  # (B, T), (B, T)
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def phase_breakdown(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: TokenBatches, lr: float, clip: float, steps: int
) -> dict[str, float]:
    """Median milliseconds of each phase of a plain step (CPU work is synchronous, so perf_counter is exact)."""
    phases: dict[str, list[float]] = {p: [] for p in ("batch", "forward", "backward", "clip", "optimizer", "zero_grad")}
    for _ in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr
        t = [time.perf_counter()]
        x, y = batches.next()  # (B, T), (B, T)
        t.append(time.perf_counter())
        _, loss = model(x, y)
        loss.item()
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        t.append(time.perf_counter())
        optimizer.step()
        t.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        t.append(time.perf_counter())
        for name, a, b in zip(phases, t, t[1:]):
            phases[name].append((b - a) * 1e3)
    return {name: statistics.median(v) for name, v in phases.items()}


def bench_throughput(
    steps: int, repeats: int, nanogpt: str | None, compile: bool = False, compile_mode: str | None = None
) -> None:
    data_dir = prepared("char")
    config = nanogpt_cpu_config().override(compile="true" if compile else "false")
    trainer = Trainer(config, data_dir, scratch_dir(), callbacks=())
    if compile and compile_mode:  # another torch.compile mode than the Trainer's default, for this measurement
        trainer.fwd_model = trainer.model = torch.compile(trainer.raw_model, mode=compile_mode)
    config = trainer.config  # vocab_size from the data
    if compile:  # the first step holds torch.compile's work: timed on its own, then excluded like any warm-up
        t0 = time.perf_counter()
        trainer.train_step(config.train.max_lr)
        print(f"torch.compile of llmlab's model: first step took {time.perf_counter() - t0:.1f} s")
    tc, mc = config.train, config.model
    print(
        f"model: {trainer.raw_model.num_parameters() / 1e6:.2f} M parameters, vocab {mc.vocab_size}, "
        f"{torch.get_num_threads()} threads, {tc.batch_size * mc.block_size} tokens/step"
    )

    # The baseline: the same architecture and initial weights, stepped the plain way.
    plain = GPT(mc)
    plain.load_state_dict(trainer.raw_model.state_dict())
    params = list(plain.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=tc.max_lr,
        betas=(tc.beta1, tc.beta2),
    )  # torch's CPU default, as nanoGPT on CPU
    plain_batches = TokenBatches(data_dir, "train", mc.block_size, tc.batch_size, seed=0)
    sides: list[tuple[str, Callable[[], float]]] = [
        ("plain eager", lambda: eager_step(plain, opt, plain_batches, tc.max_lr, tc.grad_clip)),
        ("llmlab", lambda: float(trainer.train_step(tc.max_lr))),
    ]
    if compile and not compile_mode:
        # The same Trainer step compiled with torch.compile's defaults (inductor's Python wrapper), to show
        # what runtime.compile_model's C++ wrapper on the CPU is worth, in this run.
        py_wrapper = Trainer(config, data_dir, scratch_dir(), callbacks=())
        py_wrapper.fwd_model = py_wrapper.model = torch.compile(py_wrapper.raw_model)
        py_wrapper.train_step(tc.max_lr)  # its compile, outside the timing
        sides.append(("llmlab, Python wrapper", lambda: float(py_wrapper.train_step(tc.max_lr))))
    if nanogpt:
        torch.manual_seed(tc.seed)
        ng_model, ng_opt = nanogpt_model(nanogpt, config)
        ng_batches = TokenBatches(data_dir, "train", mc.block_size, tc.batch_size, seed=0)
        sides.append(("nanoGPT", lambda: eager_step(ng_model, ng_opt, ng_batches, tc.max_lr, tc.grad_clip)))

    tokens = tc.batch_size * mc.block_size
    for _, fn in sides:  # warm-up (allocator, first-call overheads)
        for _ in range(5):
            fn()
    # Alternate single steps so that load from other processes hits every side alike.
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    for _ in range(steps * repeats):
        for name, fn in sides:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    peak = peak_flops_for(torch.device("cpu"))
    flops_per_token = trainer.raw_model.estimate_flops_per_token()
    med = {k: tokens / statistics.median(v) for k, v in times.items()}
    best = {k: tokens / statistics.quantiles(v, n=10)[0] for k, v in times.items()}
    for name in times:
        mfu = f", {100 * med[name] * flops_per_token / peak:4.1f}% of {peak / 1e9:.0f} GFLOP/s" if peak else ""
        print(
            f"{name:22s} median {med[name]:8,.0f} tokens/s ({tokens / med[name] * 1e3:5.1f} ms/step{mfu}); "
            f"fastest 10%: {best[name]:8,.0f} tokens/s"
        )
    n = len(times["llmlab"])
    label = f"llmlab (compiled{', ' + compile_mode if compile_mode else ''})" if compile else "llmlab"
    for other in [name for name in times if name != "llmlab"]:
        print(
            f"{label} / {other} (same run, {n} alternating steps each): median "
            f"{med['llmlab'] / med[other]:.2f}x, fastest 10% {best['llmlab'] / best[other]:.2f}x"
        )
    # Where a plain eager step's time goes (the same model and optimizer as the baseline above).
    phases = phase_breakdown(plain, opt, plain_batches, tc.max_lr, tc.grad_clip, steps)
    total = sum(phases.values())
    print(
        "plain eager step, median ms per phase: "
        + ", ".join(f"{k} {v:.2f} ({100 * v / total:.0f}%)" for k, v in phases.items())
        + f"; sum {total:.1f} ms"
    )


def bench_quality(
    seconds: float,
    tokenizer: str | None,
    overrides: list[str],
    nanogpt: str | None,
    preset: str = "cpu_small",
    steps: int | None = None,
) -> None:
    from llmlab.cli_args import parse_overrides

    if steps is not None and nanogpt:
        raise SystemExit("--steps and --nanogpt: nanoGPT is compared at equal seconds; drop --steps.")
    budget = dict(max_seconds=0.0, max_iters=steps) if steps is not None else dict(max_seconds=seconds)
    config = get_preset(preset).override(**budget).override(parse_overrides(overrides))
    tok = tokenizer or config.train.tokenizer
    config = config.override(tokenizer=tok)
    data_dir = prepared_for(config)
    t0 = time.perf_counter()
    trainer = Trainer(config, data_dir, scratch_dir(), callbacks=())
    result = trainer.fit()
    wall = time.perf_counter() - t0
    config = trainer.config
    print(
        f"{preset} {' '.join(overrides)} ({tok}, {trainer.raw_model.num_parameters() / 1e6:.2f} M params, batch "
        f"{config.train.batch_size}x{config.model.block_size}): {result.final_step} steps, stopped at "
        f"{result.evals[-1].elapsed:.1f} s ({result.stop_reason}); final evaluation done at {result.seconds:.1f} s, "
        f"{wall:.1f} s wall with setup"
    )
    for e in result.evals:
        print(f"  step {e.step:5d}  t={e.elapsed:6.1f}s  val {e.val_loss:.4f} nats/token  {e.val_bpb:.3f} bits/byte")
    exact = full_split_bpb(trainer.raw_model, data_dir, config, "val")
    print(
        f"final model on the whole val split (every token once, {trainer.meta['val_tokens']:,} tokens): "
        f"{exact:.3f} bits/byte"
    )
    print(
        f"best val {result.best_val_bpb:.3f} bits/byte; median {result.tokens_per_sec:,.0f} tokens/s; "
        f"peak RSS {peak_rss_mb():,.0f} MB"
    )
    if nanogpt:
        torch.manual_seed(config.train.seed)
        model, optimizer = nanogpt_model(nanogpt, config)
        steps, spent = train_for(model, optimizer, data_dir, config, seconds)
        theirs = full_split_bpb(model, data_dir, config, "val")
        print(
            f"nanoGPT's model, same settings, batches and schedule, {seconds:g} s in this process: {steps} steps "
            f"in {spent:.1f} s, whole val split {theirs:.3f} bits/byte; llmlab / nanoGPT {exact / theirs:.3f}x "
            f"(lower is better)"
        )


def train_for(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, data_dir: Path, config: Config, seconds: float
) -> tuple[int, float]:
    """A plain loop for a wall-clock budget with llmlab's schedule (lr_at with the time fraction)."""
    tc, mc = config.train, config.model
    batches = TokenBatches(data_dir, "train", mc.block_size, tc.batch_size, seed=tc.seed)
    model.train()
    t0, step = time.perf_counter(), 0
    while step < tc.max_iters and (spent := time.perf_counter() - t0) < seconds:
        eager_step(model, optimizer, batches, lr_at(step, tc, spent / seconds), tc.grad_clip)
        step += 1
    return step, time.perf_counter() - t0


def bench_memory(preset: str, steps: int, batch_size: int | None) -> None:
    config = get_preset(preset).override(
        device="cpu",
        compile="false",
        max_iters=steps,
        eval_interval=10**6,
        eval_iters=1,
        warmup_iters=0,
        log_interval=1,
    )
    if batch_size:
        config = config.override(batch_size=batch_size)
    data_dir = prepared_for(config)
    trainer = Trainer(config, data_dir, scratch_dir(), callbacks=())
    if os.environ.get("LLMLAB_PLAIN_LOSS") == "1":  # the (B, T, V) logits as before llmlab.head_loss, to compare
        import llmlab.model

        llmlab.model.CHUNKED_LOSS = False
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(config.train.max_lr)
    print(
        f"{preset}: {trainer.raw_model.num_parameters() / 1e6:.1f} M params, batch {config.train.batch_size}x"
        f"{config.model.block_size}: {steps} steps in {time.perf_counter() - t0:.1f} s, "
        f"peak RSS {peak_rss_mb():,.0f} MB"
    )


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what")
    t = sub.add_parser("throughput")
    t.add_argument("--steps", type=int, default=30)
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--nanogpt", default=None, metavar="PATH", help="a nanoGPT checkout (or its model.py)")
    t.add_argument("--compile", action="store_true", help="llmlab's side with torch.compile (compile time shown)")
    t.add_argument("--compile-mode", default=None, help="a torch.compile mode, e.g. max-autotune-no-cudagraphs")
    q = sub.add_parser("quality")
    q.add_argument("--preset", default="cpu_small")
    q.add_argument("--seconds", type=float, default=137.0)
    q.add_argument("--steps", type=int, default=None, help="train this many steps instead of --seconds")
    q.add_argument("--tokenizer", default=None)
    q.add_argument("--set", dest="overrides", action="append", default=[])
    q.add_argument("--nanogpt", default=None, metavar="PATH", help="a nanoGPT checkout (or its model.py)")
    m = sub.add_parser("memory")
    m.add_argument("--preset", default="cpu_small")
    m.add_argument("--steps", type=int, default=3)
    m.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {load_note()} at start")
    if args.what == "quality":
        bench_quality(args.seconds, args.tokenizer, args.overrides, args.nanogpt, args.preset, args.steps)
    elif args.what == "memory":
        bench_memory(args.preset, args.steps, args.batch_size)
    else:  # default (make bench): the throughput comparison, short
        bench_throughput(
            getattr(args, "steps", 30),
            getattr(args, "repeats", 5),
            getattr(args, "nanogpt", None),
            getattr(args, "compile", False),
            getattr(args, "compile_mode", None),
        )
    print(f"{load_note()} at the end")


if __name__ == "__main__":
    main()
