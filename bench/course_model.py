"""Which model should notebook 04 train (and 05 sample) in a learner's ~2 minutes? Candidates trained for the
same wall-clock on the course's own data, scored in bits per byte over the whole validation text, with a sample.

    python bench/course_model.py [--seconds 100] [--candidates char cpu_small cpu_modern]

Every candidate runs in this one invocation on the same machine, so only the comparison between them counts; a
figure from another day is not comparable. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from llmlab.config import Config, get_preset
from llmlab.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import full_split_bpb, prepared_for, scratch_dir  # noqa: E402  (bench/common.py)


def candidates() -> dict[str, Config]:
    """The models a learner could keep, each with the settings it was tuned with."""
    char = get_preset("cpu_small").override(
        tokenizer="char", embedding_size=128, num_heads=4, depth=4, block_size=64, batch_size=16, dropout=0.0,
        max_lr=2e-3, min_lr=2e-4, warmup_iters=100,
    )  # fmt: skip
    return {
        "char": char,  # notebook 04 before the course revision
        "cpu_small": get_preset("cpu_small"),
        "cpu_modern": get_preset("cpu_modern"),
        "char_modern": get_preset("cpu_modern").override(tokenizer="char", block_size=64, vocab_size=1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--candidates", nargs="+", default=["char", "cpu_small", "cpu_modern"])
    parser.add_argument("--prompt", default="ROMEO:\n")
    args = parser.parse_args()
    table = candidates()
    rows = []
    for name in args.candidates:
        config = table[name].override(max_iters=100_000, max_seconds=args.seconds, eval_interval=100_000)
        data = prepared_for(config)  # its tokenizer (and BPE size); the last 10% of the joined corpus held out
        trainer = Trainer(config, data=data, out_dir=scratch_dir())
        result = trainer.fit()
        model = trainer.raw_model
        bpb = full_split_bpb(model, data, trainer.config, "val")
        text = model.generate_sentence(
            args.prompt,
            config.model.block_size,
            200,
            trainer.tokenizer,
            "cpu",
            generator=torch.Generator().manual_seed(0),
        )
        rows.append((name, result.final_step, result.seconds, result.tokens_per_sec, bpb))
        print(f"\n=== {name}: {result.final_step} steps in {result.seconds:.0f} s, val {bpb:.3f} bits/byte\n{text}")
    print(f"\n{'candidate':<12} {'steps':>6} {'seconds':>8} {'tokens/s':>9} {'val bits/byte':>14}")
    for name, steps, seconds, tps, bpb in rows:
        print(f"{name:<12} {steps:>6} {seconds:>8.0f} {tps:>9,.0f} {bpb:>14.3f}")


if __name__ == "__main__":
    main()
