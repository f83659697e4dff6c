"""Page faults and step time with and without runtime.tune_cpu_allocator (glibc malloc thresholds). Not a test.

    python bench/allocator.py [--presets cpu_modern cpu_small] [--pairs 3] [--steps 20]

Each measurement is its own process (the allocator's settings are process-wide and cannot be undone), and the
two sides alternate, pair by pair, so that load from other processes hits both alike. A process trains the
preset's model for a few warm-up steps, then ``--steps`` timed ``Trainer.train_step`` calls, and reports the
minor page faults and system CPU time per step (``resource.getrusage``) and the median step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, statistics, sys, time
sys.path.insert(0, {bench!r})
import llmlab.runtime as runtime
if not {tuned}:
    runtime._allocator_tuned = False  # as if tuned already: the Trainer leaves glibc's defaults alone
from common import prepared_for, scratch_dir  # noqa: E402  (bench/common.py)
from llmlab.config import get_preset
from llmlab.train import Trainer
config = get_preset({preset!r}).override(compile="false", tokenizer="bpe")
trainer = Trainer(config, prepared_for(config), scratch_dir(), callbacks=())
for _ in range(4):
    trainer.train_step(config.train.max_lr)
r0, times = resource.getrusage(resource.RUSAGE_SELF), []
for _ in range({steps}):
    t0 = time.perf_counter()
    trainer.train_step(config.train.max_lr)
    times.append(time.perf_counter() - t0)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(dict(step=statistics.median(times), faults=(r1.ru_minflt - r0.ru_minflt) / {steps},
                      sys=(r1.ru_stime - r0.ru_stime) / {steps}, tuned=runtime.tune_cpu_allocator())))
"""


def measure(preset: str, tuned: bool, steps: int) -> dict[str, float]:
    code = CHILD.format(bench=str(Path(__file__).resolve().parent), tuned=tuned, preset=preset, steps=steps)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="*", default=["cpu_modern", "cpu_small"])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"date {time.strftime('%Y-%m-%d %H:%M')}")
    for preset in args.presets:
        ratios = []
        for pair in range(args.pairs):
            plain, tuned = measure(preset, False, args.steps), measure(preset, True, args.steps)
            if not tuned["tuned"]:
                raise SystemExit("tune_cpu_allocator() did nothing here (not Linux with glibc): nothing to compare.")
            ratios.append(plain["step"] / tuned["step"])
            print(
                f"{preset} pair {pair + 1}: glibc defaults {plain['step'] * 1e3:.0f} ms/step, "
                f"{plain['faults']:,.0f} faults, {plain['sys'] * 1e3:.0f} ms system time per step | tuned "
                f"{tuned['step'] * 1e3:.0f} ms/step, {tuned['faults']:,.0f} faults, {tuned['sys'] * 1e3:.0f} ms "
                f"-> {ratios[-1]:.2f}x"
            )
        print(f"{preset}: median {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
