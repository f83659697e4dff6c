"""llmlab's presets against nanoGPT's README CPU run, at equal wall-clock, in one invocation.

    python bench/vs_nanogpt.py [--nanogpt PATH] [--iters 2500] [--presets cpu_small cpu_modern] [--seeds 3]

A preset may carry settings to compare variants in the same invocation: ``cpu_modern:eval_iters=10,max_lr=5e-3``.

PATH is a nanoGPT checkout (git clone https://github.com/karpathy/nanoGPT); its files are used unmodified.
The bench:

1. writes the embedded corpus as nanoGPT's character data set (the 42 works joined with blank lines,
   first 90% train / last 10% val by position; uint16 ids and meta.pkl as its prepare.py writes them);
2. runs nanoGPT's own ``train.py`` unmodified, as a subprocess, with its README's CPU flags
   (``--device=cpu --compile=False --eval_iters=20 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
   --n_embd=128 --max_iters=N --lr_decay_iters=N --dropout=0.0``) and times it;
3. scores nanoGPT's checkpoint over every token of the val text (bits per byte);
4. trains each llmlab preset for the same number of seconds on the same split (the last 10% of the
   joined text held out), once per seed, and scores it the same way;
5. runs nanoGPT again at the end and prints the drift between its two runs (time and bits/byte): each ratio
   divides by the mean of nanoGPT's two scores, and the median over the seeds is the figure to report.

A figure from another day is not comparable: the machine is shared, so only ratios of one run count.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import full_split_bpb, load_note, prepared_for, scratch_dir  # noqa: E402  (bench/common.py)

from llmlab.cli_args import parse_overrides  # noqa: E402
from llmlab.config import get_preset  # noqa: E402
from llmlab.corpus import shakespeare_text  # noqa: E402
from llmlab.metrics import sequence_bits_per_byte  # noqa: E402
from llmlab.train import Trainer  # noqa: E402

# The course machines keep nanoGPT's files, unmodified, beside the checkout (shared/baselines/README.md).
DEFAULT_NANOGPT = Path(__file__).resolve().parents[2] / "shared" / "baselines" / "nanogpt"

FLAGS = (
    "--device=cpu --compile=False --eval_iters=20 --log_interval=50 --block_size=64 --batch_size=12 "
    "--n_layer=4 --n_head=4 --n_embd=128 --dropout=0.0"
).split()


def write_char_dataset(root: Path) -> tuple[np.ndarray, int]:
    """nanoGPT's shakespeare_char format for the embedded corpus; returns (val ids, val bytes)."""
    text = shakespeare_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    n = len(text)
    train, val = text[: int(n * 0.9)], text[int(n * 0.9) :]
    out = root / "data" / "shk_char"
    out.mkdir(parents=True)
    np.array([stoi[c] for c in train], dtype=np.uint16).tofile(out / "train.bin")
    val_ids = np.array([stoi[c] for c in val], dtype=np.uint16)
    val_ids.tofile(out / "val.bin")
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    return val_ids, len(val.encode("utf-8"))


def nanogpt_val_bpb(root: Path, val_ids: np.ndarray, val_bytes: int) -> float:
    """Bits per byte of nanoGPT's saved checkpoint over every val token (windows of its block size)."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", root / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = torch.load(root / "out-shakespeare-char" / "ckpt.pt", map_location="cpu", weights_only=False)
    model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    model.eval()
    return sequence_bits_per_byte(model, val_ids, val_bytes, ckpt["model_args"]["block_size"])


def run_nanogpt(nanogpt: Path, iters: int) -> tuple[float, float, int]:
    """Run nanoGPT's train.py; return (wall seconds, whole-val bits/byte, its iterations)."""
    root = Path(tempfile.mkdtemp(prefix="nanogpt_run_"))
    for name in ("model.py", "train.py", "configurator.py"):
        shutil.copy(nanogpt / name, root / name)
    shutil.copytree(nanogpt / "config", root / "config")
    val_ids, val_bytes = write_char_dataset(root)
    cmd = [
        sys.executable,
        "train.py",
        "config/train_shakespeare_char.py",
        "--dataset=shk_char",
        *FLAGS,
        f"--max_iters={iters}",
        f"--lr_decay_iters={iters}",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"nanoGPT's train.py failed:\n{done.stderr[-3000:]}")
    bpb = nanogpt_val_bpb(root, val_ids, val_bytes)
    shutil.rmtree(root, ignore_errors=True)
    return wall, bpb, iters


def run_llmlab(preset: str, seconds: float, seed: int) -> tuple[float, int, float]:
    """Train a preset (``name`` or ``name:key=value,...``) for ``seconds`` on the tail split; return
    (whole-val bits/byte, steps, seconds)."""
    name, _, settings = preset.partition(":")
    overrides = parse_overrides(settings.split(",")) if settings else {}
    config = get_preset(name).override(overrides).override(max_seconds=seconds, seed=seed)
    data_dir = prepared_for(config, "tail")
    trainer = Trainer(config, data_dir, scratch_dir(), callbacks=(), cpu_threads=torch.get_num_threads())
    result = trainer.fit()
    return full_split_bpb(trainer.raw_model, data_dir, trainer.config, "val"), result.final_step, result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--nanogpt", type=Path, default=None, help=f"a nanoGPT checkout (default: {DEFAULT_NANOGPT}, where it is)"
    )
    parser.add_argument("--iters", type=int, default=2500, help="nanoGPT's max_iters (2500: about 137 s here)")
    parser.add_argument("--presets", nargs="+", default=["cpu_small", "cpu_modern"])
    parser.add_argument("--seeds", type=int, default=3, help="llmlab runs per preset (different seeds)")
    args = parser.parse_args()
    if args.nanogpt is None:
        if not (DEFAULT_NANOGPT / "train.py").is_file():
            print(f"bench/vs_nanogpt.py: skipped, no nanoGPT checkout at {DEFAULT_NANOGPT}; pass --nanogpt PATH.")
            return
        args.nanogpt = DEFAULT_NANOGPT
    if not (args.nanogpt / "train.py").is_file():
        raise SystemExit(f"--nanogpt {args.nanogpt}: no train.py there; pass a nanoGPT checkout.")
    print(load_note(), f"torch threads {torch.get_num_threads()}", f"date {time.strftime('%Y-%m-%d %H:%M')}")
    wall, first, iters = run_nanogpt(args.nanogpt, args.iters)
    print(f"nanoGPT train.py, {iters} iters: {wall:.1f} s wall, whole val {first:.3f} bits/byte", flush=True)
    results: dict[str, list[float]] = {}
    for preset in args.presets:
        scores = results.setdefault(preset, [])
        for seed in range(args.seeds):
            bpb, steps, spent = run_llmlab(preset, wall, 1337 + seed)
            scores.append(bpb)
            print(
                f"{preset} seed {1337 + seed}: {steps} steps in {spent:.1f} s, whole val {bpb:.3f} bits/byte",
                flush=True,
            )
    wall_after, last, _ = run_nanogpt(args.nanogpt, args.iters)
    base = statistics.mean([first, last])
    print(
        f"nanoGPT again at the end: {wall_after:.1f} s wall, whole val {last:.3f} bits/byte (drift: time "
        f"{wall_after / wall - 1:+.1%}, bits/byte {last / first - 1:+.2%}); ratios divide by their mean {base:.3f}"
    )
    for preset, scores in results.items():
        ratios = ", ".join(f"{b / base:.3f}x" for b in scores)
        median = statistics.median(scores)
        print(
            f"{preset}: {len(scores)} seed(s) {ratios}; median {median:.3f} bits/byte = {median / base:.3f}x nanoGPT "
            f"(range {min(scores) / base:.3f}-{max(scores) / base:.3f}x)"
        )
    print(load_note())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
