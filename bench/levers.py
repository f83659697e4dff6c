"""Does a change to ``cpu_modern`` win at equal seconds? Each lever against the preset as it is, with seeds.

    python bench/levers.py [--seconds 60] [--seeds 1 2 3] [--levers swiglu]

Runs alternate (seed 1: base, lever; seed 2: base, lever; ...) so a drift of the machine's speed spreads over
both sides. Each run trains for the same wall-clock on the course's BPE data and is scored in bits per byte
over the whole validation text; ``llmlab.compare`` gives the verdict (better needs >= 3 seeds a side and a 95%
interval of the gap that excludes 0). Only the comparison inside one invocation counts: a figure from another
day is not comparable. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from llmlab.compare import compare
from llmlab.config import get_preset
from llmlab.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import full_split_bpb, prepared_for, scratch_dir  # noqa: E402  (bench/common.py)

# Each lever: the settings it changes on top of cpu_modern.
LEVERS = {
    "swiglu": {"mlp": "swiglu"},  # SiLU-gated MLP, hidden 8C/3 rounded up to 64 (Llama's rule), vs ReLU² at 4C
    "wsd": {"schedule": "wsd"},  # warm-up, stable at max_lr, linear decay over the last 30% (steps or clock)
    "unet": {"unet_skips": True},  # block i's output into block depth-1-i's input, learned weights (modded-nanogpt)
    # A BPE (trained on the train text only) of more tokens: val bytes per token 2.33 at 1,024, 2.64 at 2,048,
    # 2.90 at 4,096, 3.15 at 8,192; the output head (and its share of a step) grows with it.
    "bpe1024": {"vocab_size": 1024},  # the vocabulary cpu_modern had until 2026-12-05
    "bpe2048": {"vocab_size": 2048},
    "bpe4096": {"vocab_size": 4096},
    "bpe8192": {"vocab_size": 8192},
    "b32_t64": {"batch_size": 32, "block_size": 64},  # the same tokens per step in shorter windows
    "ve1": {"value_embeds": 1},  # one value-embedding table, read by the first and the last block
    "ve2": {"value_embeds": 2},  # two tables: blocks 0 and 2 read the first, blocks 1 and 3 the second
    # the same hidden width as ReLU² (1.5x its MLP weights)
    "swiglu_4c": {"mlp": "swiglu", "mlp_hidden": 4 * get_preset("cpu_modern").model.embedding_size},
}


def run(name: str, settings: dict, seed: int, seconds: float) -> tuple[float, int]:
    config = get_preset("cpu_modern").override(
        **settings, seed=seed, max_iters=100_000, max_seconds=seconds, eval_interval=100_000
    )
    data = prepared_for(config)
    trainer = Trainer(config, data=data, out_dir=scratch_dir())
    result = trainer.fit()
    bpb = full_split_bpb(trainer.raw_model, data, trainer.config, "val")
    print(f"  {name:>10} seed {seed}: {result.final_step:5d} steps, {bpb:.4f} bits/byte", flush=True)
    return bpb, result.final_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--levers", nargs="+", default=["swiglu"], choices=sorted(LEVERS))
    args = parser.parse_args()
    names = ["cpu_modern", *args.levers]
    bpb: dict[str, list[float]] = {n: [] for n in names}
    steps: dict[str, list[int]] = {n: [] for n in names}
    for seed in args.seeds:
        for name in names:
            b, s = run(name, LEVERS.get(name, {}), seed, args.seconds)
            bpb[name].append(b)
            steps[name].append(s)
    print(f"\n{args.seconds:g} s per run, seeds {args.seeds}, whole-val bits/byte (median, range; steps median)")
    for name in names:
        print(
            f"  {name:>10}: {statistics.median(bpb[name]):.4f} ({min(bpb[name]):.4f}-{max(bpb[name]):.4f}); "
            f"{statistics.median(steps[name]):.0f} steps"
        )
    for lever in args.levers:
        print(compare(bpb[lever], bpb["cpu_modern"]).says(f"cpu_modern + {lever}", "cpu_modern"))


if __name__ == "__main__":
    main()
